"""ImageNet backbone weights: torchvision ``state_dict``s converted to Flax, saved and restored
with orbax, and the check that a config which freezes backbone parts is given such weights.

``model.backbone_init`` takes either the orbax folder ``dla-import-torchvision`` writes or the
torchvision ``state_dict`` file (``.pth``) itself, converted on load; torch is imported only to
read such a file (the ``torch`` extra), never to check a config or restore a folder.

torchvision names every tensor ``<module path>.<tensor>``; the Flax ResNet in ``models.resnet``
uses the same module names with ``layerS.I`` written ``layerS_I`` and ``downsample.0`` /
``downsample.1`` written ``downsample_conv`` / ``downsample_bn``. Conv kernels go from torch's
[O, I/groups, kh, kw] to Flax's [kh, kw, I/groups, O].

Weights are converted, saved and restored in the 'frozen_bn' layout (every BatchNorm tensor in
``batch_stats``); ``norm_layout`` moves the affine ``scale`` and ``bias`` to ``params`` for a
'bn_eval' backbone.
"""

import os
import re
from typing import Any, Mapping

from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from dla_jax import errors
from dla_jax.models import resnet

BACKBONE_INIT = 'model.backbone_init'

# torch name of each BatchNorm tensor -> name in the ``batch_stats`` collection.
_BN_TENSORS = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}
# Tensors of a torchvision classifier that the detector does not use.
_UNUSED = ('fc.weight', 'fc.bias')

# The ImageNet weights MMDetection's configs start each architecture from: architecture ->
# (state_dict file, what it is). ResNets: 'torchvision://resnetN' (e.g. mmdet
# configs/atss/atss_r50_fpn_1x_coco.py), torchvision's IMAGENET1K_V1 files (its
# torchvision/models/resnet.py). ResNeXts: 'open-mmlab://resnext101_32x4d' / '..._64x4d' (e.g. mmdet
# configs/retinanet/retinanet_x101_64x4d_fpn_1x_coco.py), files named in mmcv's
# mmcv/model_zoo/open_mmlab.json.
IMAGENET_WEIGHTS = {
    'resnet18': ('resnet18-f37072fd.pth', "torchvision's IMAGENET1K_V1 weights, the ones "
                 "MMDetection's torchvision://resnet18 names"),
    'resnet34': ('resnet34-b627a593.pth', "torchvision's IMAGENET1K_V1 weights, the ones "
                 "MMDetection's torchvision://resnet34 names"),
    'resnet50': ('resnet50-0676ba61.pth', "torchvision's IMAGENET1K_V1 weights, the ones "
                 "MMDetection's torchvision://resnet50 names"),
    'resnet101': ('resnet101-63fe2227.pth', "torchvision's IMAGENET1K_V1 weights, the ones "
                  "MMDetection's torchvision://resnet101 names"),
    'resnext101_32x4d': ('resnext101_32x4d-a5af3160.pth',
                         "the weights MMDetection's open-mmlab://resnext101_32x4d names, listed "
                         'in mmcv/model_zoo/open_mmlab.json (torchvision has no ResNeXt-101 '
                         '32x4d)'),
    'resnext101_64x4d': ('resnext101_64x4d-ee2c6f71.pth',
                         "the weights MMDetection's open-mmlab://resnext101_64x4d names, listed "
                         "in mmcv/model_zoo/open_mmlab.json (torchvision's "
                         'resnext101_64x4d-173b62eb.pth, IMAGENET1K_V1, comes from a different, '
                         'newer recipe)'),
}


def _torch_module_name(flax_path: tuple[str, ...]) -> str:
  """('layer1_0', 'downsample_conv') -> 'layer1.0.downsample.0'."""
  parts = []
  for p in flax_path:
    if p.startswith('layer'):
      parts.extend(p.split('_'))
    elif p == 'downsample_conv':
      parts.extend(['downsample', '0'])
    elif p == 'downsample_bn':
      parts.extend(['downsample', '1'])
    else:
      parts.append(p)
  return '.'.join(parts)


def _backbone_shapes(arch: str, width: int) -> dict[str, Any]:
  """Abstract {'params', 'batch_stats'} of the Flax backbone, 'frozen_bn' (no computation)."""
  model = resnet.ResNet(arch, width, norm='frozen_bn')
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def torchvision_to_flax(state_dict: Mapping[str, np.ndarray], arch: str,
                        width: int = 64) -> dict[str, Any]:
  """Converts a torchvision ResNet/ResNeXt ``state_dict`` (tensors as numpy arrays) to the Flax
  backbone's variables ``{'params': ..., 'batch_stats': ...}``, float32.

  Raises:
    ValueError: naming the missing keys, the unexpected keys (a state_dict of another
      architecture) or the tensors whose shapes differ.
  """
  abstract = _backbone_shapes(arch, width)
  expected = {}  # torch key -> (collection, flax path, flax shape)
  for collection, tree in abstract.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      names = tuple(k.key for k in path)
      module, tensor = _torch_module_name(names[:-1]), names[-1]
      if collection == 'params':
        torch_tensor = {'kernel': 'weight'}[tensor]
      else:
        torch_tensor = {v: k for k, v in _BN_TENSORS.items()}[tensor]
      expected[f'{module}.{torch_tensor}'] = (collection, names, leaf.shape)

  given = {k for k in state_dict if not k.endswith('num_batches_tracked') and k not in _UNUSED}
  missing = sorted(set(expected) - given)
  unexpected = sorted(given - set(expected))
  if missing or unexpected:
    raise ValueError(
        f'state_dict does not match architecture {arch!r}: '
        f'{len(missing)} missing keys {_first(missing)}; '
        f'{len(unexpected)} unexpected keys {_first(unexpected)}')

  out = {'params': {}, 'batch_stats': {}}
  bad_shapes = []
  for key, (collection, names, shape) in expected.items():
    value = np.asarray(state_dict[key], dtype=np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    if value.shape != shape:
      bad_shapes.append(f'{key}: {value.shape} vs {shape}')
      continue
    node = out[collection]
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = value
  if bad_shapes:
    raise ValueError(f'state_dict does not match architecture {arch!r} (width {width}): '
                     f'shapes differ for {_first(sorted(bad_shapes))}')
  return out


def _first(items: list[str], n: int = 8) -> str:
  shown = ', '.join(items[:n])
  return f'[{shown}{", ..." if len(items) > n else ""}]'


def _torch_load_reason(e: Exception) -> str:
  """torch.load's reason for refusing a file, on one line (its message is a paragraph of
  advice around a 'WeightsUnpickler error: ...' line)."""
  found = re.search(r'WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)', str(e))
  lines = str(e).strip().splitlines()
  return found.group(1) if found else (lines[0] if lines else type(e).__name__)


def read_state_dict(path: str, field: str = BACKBONE_INIT) -> dict[str, np.ndarray]:
  """Reads a torch ``state_dict`` file into numpy arrays (floating tensors as float32). torch is
  imported here, and loads with ``weights_only=True``: no code in the file runs.

  Raises:
    ConfigError: starting with ``field`` and naming ``path``: no such file, torch not
      installed, not a torch file, or a torch file that holds something other than a
      ``state_dict`` (a list of tensors, a whole pickled ``nn.Module``).
  """
  if not os.path.isfile(path):
    raise errors.ConfigError(f'{field}: no file at {path}')
  try:
    import torch  # pylint: disable=g-import-not-at-top  (the optional 'torch' extra)
  except ImportError as e:
    raise errors.ConfigError(
        f"{field}: reading the torch file {path} needs torch: pip install -e '.[torch]', or "
        'convert the file with dla-import-torchvision where torch is installed and give the '
        'folder it writes') from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (torch raises many kinds)
    raise errors.ConfigError(
        f'{field}: {path} is not a torch state_dict file that torch.load(weights_only=True) '
        f'reads ({_torch_load_reason(e)}); a whole model saved with torch.save(model) is '
        'refused too: save model.state_dict() instead') from e
  if isinstance(state, dict) and 'state_dict' in state:  # training checkpoints wrap it
    state = state['state_dict']
  if not isinstance(state, dict):
    raise errors.ConfigError(f'{field}: {path} holds a {type(state).__name__}, not a '
                             'state_dict (a dict from tensor names to tensors)')
  return {k: (v.float() if v.is_floating_point() else v).detach().cpu().numpy()
          for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_torchvision_file(path: str, arch: str, width: int = 64,
                          field: str = BACKBONE_INIT) -> dict[str, Any]:
  """``torchvision_to_flax`` of the ``state_dict`` file at ``path`` (``read_state_dict``).

  Raises:
    ConfigError: starting with ``field``, naming ``path`` and, for a state_dict of another
      architecture or width, the missing, unexpected or misshapen keys.
  """
  state_dict = read_state_dict(path, field)
  try:
    return torchvision_to_flax(state_dict, arch, width)
  except ValueError as e:
    raise errors.ConfigError(f'{field}: {path}: {e}') from e


def save_backbone(path: str, variables: Mapping[str, Any]) -> None:
  """Writes backbone variables to the orbax checkpoint folder ``path`` (must not exist)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), dict(variables))
  checkpointer.wait_until_finished()


def _restore_backbone(path: str, arch: str, width: int) -> dict[str, Any]:
  """The backbone variables saved in the orbax folder ``path``; raises ConfigError where their
  structure or shapes differ from backbone ``arch`` of ``width``."""
  target = _backbone_shapes(arch, width)
  saved = ocp.StandardCheckpointer().metadata(path).item_metadata
  if saved is None:
    raise errors.ConfigError(f'{BACKBONE_INIT}: {path} is a folder but not a backbone '
                             'checkpoint written by dla-import-torchvision')
  want = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in
          jax.tree_util.tree_flatten_with_path(target)[0]}
  have = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in
          jax.tree_util.tree_flatten_with_path(dict(saved))[0]}
  if want != have:
    diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    raise errors.ConfigError(
        f'{BACKBONE_INIT}: backbone at {path} does not match model.backbone={arch!r} '
        f'(width {width}); {len(diff)} entries differ: {_first(diff)}')
  return ocp.StandardCheckpointer().restore(path, target)


def norm_layout(variables: Mapping[str, Any], norm: str) -> dict[str, Any]:
  """Backbone variables in the 'frozen_bn' layout, rearranged for ``norm``: for 'bn_eval', every
  BatchNorm's ``scale`` and ``bias`` move from ``batch_stats`` to ``params`` (same paths); for
  'frozen_bn', unchanged."""
  if norm == 'frozen_bn':
    return dict(variables)
  if norm != 'bn_eval':
    raise ValueError(f'no BatchNorm layout {norm!r}')
  params = traverse_util.flatten_dict(variables['params'])
  stats = traverse_util.flatten_dict(variables['batch_stats'])
  for path in [p for p in stats if p[-1] in ('scale', 'bias')]:
    params[path] = stats.pop(path)
  return {'params': traverse_util.unflatten_dict(params),
          'batch_stats': traverse_util.unflatten_dict(stats)}


def read_backbone(path: str, arch: str, width: int) -> dict[str, Any]:
  """The ``{'params', 'batch_stats'}`` of backbone ``arch`` of ``width`` ('frozen_bn' layout) from
  ``path``: an orbax folder written by ``dla-import-torchvision``, or a torchvision
  ``state_dict`` file (read with torch).

  Raises:
    ConfigError: starting with ``model.backbone_init`` and naming ``path``: nothing there, an
      unreadable file, or weights of another architecture (with the differing keys).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    return _restore_backbone(path, arch, width)
  if os.path.isfile(path):
    return read_torchvision_file(path, arch, width)
  raise errors.ConfigError(f'{BACKBONE_INIT}: no orbax folder or torch state_dict file at '
                           f'{path}')
