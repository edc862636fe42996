"""Backbone weights from torchvision ``state_dict``s, saved and restored with orbax.

torchvision names every tensor ``<module path>.<tensor>``; the Flax ResNet in ``models.resnet``
uses the same module names with ``layerS.I`` written ``layerS_I`` and ``downsample.0`` /
``downsample.1`` written ``downsample_conv`` / ``downsample_bn``. Conv kernels go from torch's
[O, I/groups, kh, kw] to Flax's [kh, kw, I/groups, O].
"""

import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from dla_jax.models import resnet

# torch name of each BatchNorm tensor -> name in the ``batch_stats`` collection.
_BN_TENSORS = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}
# Tensors of a torchvision classifier that the detector does not use.
_UNUSED = ('fc.weight', 'fc.bias')


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
  """Abstract {'params', 'batch_stats'} of the Flax backbone (no computation)."""
  model = resnet.ResNet(arch, width)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def torchvision_to_flax(state_dict: Mapping[str, np.ndarray], arch: str,
                        width: int = 64) -> dict[str, Any]:
  """Converts a torchvision ResNet/ResNeXt ``state_dict`` (tensors as numpy arrays) to the Flax
  backbone's variables ``{'params': ..., 'batch_stats': ...}``.

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


def save_backbone(path: str, variables: Mapping[str, Any]) -> None:
  """Writes backbone variables to the orbax checkpoint folder ``path`` (must not exist)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), dict(variables))
  checkpointer.wait_until_finished()


def load_backbone(path: str, variables: Mapping[str, Any]) -> dict[str, Any]:
  """Replaces the ``backbone`` subtrees of detector ``variables`` with the ones saved at ``path``.

  Raises:
    FileNotFoundError: if ``path`` does not exist (names ``model.backbone_init``).
    ValueError: if the saved backbone's structure or shapes differ from the model's.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'model.backbone_init: no checkpoint folder at {path}')
  target = {c: variables[c]['backbone'] for c in ('params', 'batch_stats')}
  saved = ocp.StandardCheckpointer().metadata(path).item_metadata
  want = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in
          jax.tree_util.tree_flatten_with_path(target)[0]}
  have = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in
          jax.tree_util.tree_flatten_with_path(dict(saved))[0]}
  if want != have:
    diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    raise ValueError(f'model.backbone_init: backbone at {path} does not match model.backbone; '
                     f'{len(diff)} entries differ: {_first(diff)}')
  restored = ocp.StandardCheckpointer().restore(path, target)
  out = {c: dict(v) for c, v in variables.items()}
  for c in ('params', 'batch_stats'):
    out[c]['backbone'] = restored[c]
  return out
