"""Converts a torchvision ResNet/ResNeXt ``state_dict`` file into dla_jax backbone weights.

  dla-import-torchvision --arch resnet50 --state_dict resnet50-0676ba61.pth --out ~/weights/r50

then train with ``--config.model.backbone_init=~/weights/r50``. Needs the ``torch`` extra
(``pip install 'dla-jax[torch]'``); nothing else in dla_jax imports torch.
"""

import argparse
import os

from dla_jax.models import pretrained
from dla_jax.models import resnet


def read_state_dict(path: str) -> dict:
  """Reads a torch ``state_dict`` file into numpy arrays (``weights_only=True``: no code runs)."""
  import torch  # pylint: disable=g-import-not-at-top  (optional extra)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--state_dict: no file at {path}')
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:
    raise ValueError(f'{path}: not a readable torch state_dict file ({e})') from e
  if isinstance(state, dict) and 'state_dict' in state:  # training checkpoints wrap it
    state = state['state_dict']
  if not isinstance(state, dict):
    raise ValueError(f'{path}: holds a {type(state).__name__}, not a state_dict')
  return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, 'numpy')}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--arch', required=True, choices=sorted(resnet.ARCHITECTURES))
  parser.add_argument('--state_dict', required=True, help='torchvision .pth file')
  parser.add_argument('--out', required=True, help='orbax checkpoint folder to create')
  args = parser.parse_args(argv)
  out = os.path.abspath(os.path.expanduser(args.out))
  if os.path.exists(out):
    parser.error(f'--out {out} exists; choose a new folder')
  variables = pretrained.torchvision_to_flax(read_state_dict(args.state_dict), args.arch)
  pretrained.save_backbone(out, variables)
  print(f'wrote {args.arch} backbone weights to {out}; train with '
        f'--config.model.backbone_init={out}')


if __name__ == '__main__':
  main()
