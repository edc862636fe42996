"""Converts a torchvision ResNet/ResNeXt ``state_dict`` file into dla_jax backbone weights.

  dla-import-torchvision --arch resnet50 --state_dict resnet50-0676ba61.pth --out ~/weights/r50

then train with ``--config.model.backbone_init=~/weights/r50``: training from the folder needs no
torch. This command needs the ``torch`` extra (``pip install -e '.[torch]'``); where torch is
installed, ``--config.model.backbone_init=resnet50-0676ba61.pth`` also takes the file itself and
converts it at every start. ``models.pretrained.IMAGENET_WEIGHTS`` names each architecture's file.
"""

import argparse
import os

from dla_jax import errors
from dla_jax.models import pretrained
from dla_jax.models import resnet


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
  try:
    variables = pretrained.read_torchvision_file(os.path.expanduser(args.state_dict), args.arch,
                                                 field='--state_dict')
  except errors.UserError as e:
    parser.error(str(e))
  pretrained.save_backbone(out, variables)
  print(f'wrote {args.arch} backbone weights to {out}; train with '
        f'--config.model.backbone_init={out}')


if __name__ == '__main__':
  main()
