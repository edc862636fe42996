"""Every config field's check, in one place, run before anything is built.

``check(config, num_devices)`` raises a ``ConfigError`` naming the first field whose value
cannot work and the values it allows. The fields that choose between ways of doing something
list their choices in ``CHOICES``. What can only be known from the data (files that exist,
``data.num_classes`` against a dataset's categories, a TFDS split's format) is checked where the
data is opened, in ``dla_jax.data``; backbone weight files where they are read
(``models.pretrained``).
"""

import ml_collections

from dla_jax import cpu
from dla_jax import errors
from dla_jax.models import detector
from dla_jax.models import pretrained
from dla_jax.models import resnet

CHOICES = {
    'model.backbone': tuple(resnet.ARCHITECTURES),
    'model.backbone_norm': ('bn_eval', 'frozen_bn', 'group_norm'),
    'model.head': ('dla', 'atss'),
    'model.prior': ('point', 'anchor'),
    'model.dtype': (*detector.DTYPES, 'auto'),
    'model.conv_impl': cpu.CONV_IMPLS,
    'data.source': ('shapes', 'coco_json', 'tfds'),
    'data.tfds_read': ('data_source', 'export'),
    'assigner.name': ('dla', 'atss'),
    'assigner.alpha_schedule': ('epoch', 'continuous', 'fixed'),
    'inference.ranking': ('cls_x_quality', 'quality'),
    'optim.name': ('sgd', 'adamw'),
    'evaluation.backend': ('pycocotools', 'faster_coco_eval'),
}


def _frozen_parts(frozen_stages: int) -> str:
  """0 -> 'stem', 1 -> 'stem and stage 1', 3 -> 'stem and stages 1-3'."""
  if frozen_stages == 0:
    return 'stem'
  if frozen_stages == 1:
    return 'stem and stage 1'
  return f'stem and stages 1-{frozen_stages}'


def check_backbone_init(model_config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError when the backbone freezes parts of itself (``backbone_norm`` 'bn_eval' or
  'frozen_bn', or ``frozen_stages`` >= 0) but ``backbone_init`` gives it no weights, so that
  those parts would keep their random initial values; or when weights are given to a backbone
  without BatchNorm (``backbone_norm`` 'group_norm'). Reads no file and needs no torch.
  """
  m = model_config
  if m.backbone_init and m.backbone_norm == 'group_norm':
    raise errors.ConfigError(
        f"model.backbone_norm: {m.backbone_norm!r} has no BatchNorm statistics to take the "
        f"ImageNet weights of {pretrained.BACKBONE_INIT}={m.backbone_init!r}; use 'bn_eval' or "
        f"'frozen_bn', or set "
        f"{pretrained.BACKBONE_INIT}='' to train from scratch")
  frozen = []
  if m.backbone_norm in ('bn_eval', 'frozen_bn'):
    frozen.append(f"model.backbone_norm={m.backbone_norm!r} freezes its BatchNorm statistics at "
                  'the identity')
  if m.frozen_stages >= 0:
    frozen.append(f'model.frozen_stages={m.frozen_stages} freezes its '
                  f'{_frozen_parts(m.frozen_stages)}')
  if m.backbone_init or not frozen:
    return
  file, what = pretrained.IMAGENET_WEIGHTS[m.backbone]
  init = pretrained.BACKBONE_INIT
  raise errors.ConfigError(
      f'{init}: empty, so the {m.backbone} backbone starts from random weights, but '
      f'{" and ".join(frozen)}: these parts would never learn. Start it from ImageNet weights: '
      f'{file}, {what}. Convert the file once with `dla-import-torchvision --arch {m.backbone} '
      f'--state_dict {file} --out DIR` and set --config.{init}=DIR, or set '
      f'--config.{init}={file} to convert it at every start (needs torch). To train '
      "from scratch instead, set model.backbone_norm='group_norm' and model.frozen_stages=-1.")


def _field(config: ml_collections.ConfigDict, name: str):
  section, field = name.split('.')
  return config[section][field]


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise errors.ConfigError(message)


def check(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1, *,
          training: bool = True) -> None:
  """Raises ConfigError naming the first field of ``config`` whose value cannot work on
  ``num_devices`` devices in ``num_processes`` processes. With ``training``, also a backbone
  that would start from random weights where it is frozen (``check_backbone_init``); evaluation
  and inference take their weights from a checkpoint instead."""
  for name, allowed in CHOICES.items():
    value = _field(config, name)
    _require(value in allowed, f'{name}: {value!r} is not one of {allowed}')
  m = config.model
  for field in ('fpn_channels', 'head_channels', 'metric_channels'):
    _require(m[field] > 0, f'model.{field}: must be positive, got {m[field]}')
  if m.backbone_norm == 'group_norm':
    _require(m.backbone_width % m.gn_groups == 0, f'model.gn_groups: {m.gn_groups} does not '
             f'divide model.backbone_width ({m.backbone_width})')
  _require(m.head_channels % m.gn_groups == 0,
           f'model.gn_groups: {m.gn_groups} does not divide model.head_channels '
           f'({m.head_channels})')
  _require(0 < m.prior_prob < 1, f'model.prior_prob: {m.prior_prob} is not in (0, 1)')
  if training:
    check_backbone_init(m)

  d = config.data
  _require(d.num_classes >= 1, f'data.num_classes: must be at least 1, got {d.num_classes}')
  _require(not any(s % 32 for s in d.image_size),
           f'data.image_size: {tuple(d.image_size)} must be multiples of 32')
  short_max = max(max(d.short_side_range), min(d.scale))
  _require(max(d.scale) <= max(d.image_size) and short_max <= min(d.image_size),
           f'data.scale {tuple(d.scale)} and data.short_side_range {tuple(d.short_side_range)} '
           f'give images larger than data.image_size {tuple(d.image_size)}')
  _require(d.num_workers >= -1, f'data.num_workers: {d.num_workers} is not -1 (from the '
           'cores), 0 (load in this process) or a number of worker processes')
  _require(d.num_threads >= 0, f'data.num_threads: {d.num_threads} is negative')
  _require(d.max_boxes >= 1, f'data.max_boxes: must be at least 1, got {d.max_boxes}')
  _require(d.max_image_pixels >= 0, f'data.max_image_pixels: {d.max_image_pixels} is not 0 '
           "(Pillow's limit) or a number of pixels")

  _require(config.assigner.topk >= 1,
           f'assigner.topk: must be at least 1, got {config.assigner.topk}')

  o = config.optim
  _require(o.epochs >= 1, f'optim.epochs: must be at least 1, got {o.epochs}')
  for field in ('base_lr', 'base_batch'):
    _require(o[field] > 0, f'optim.{field}: must be positive, got {o[field]}')
  for field in ('momentum', 'weight_decay'):
    _require(o[field] >= 0, f'optim.{field}: must not be negative, got {o[field]}')

  _require(config.train.stop_at_step >= 0, f'train.stop_at_step: {config.train.stop_at_step} is '
           'negative (0 trains to the end of the schedule)')
  for field in ('global_batch', 'eval_batch'):
    value = config.train[field]
    _require(value >= 1 and value % num_devices == 0,
             f'train.{field}: {value} is not a positive multiple of the {num_devices} devices')
    _require(value % num_processes == 0,
             f'train.{field}: {value} does not split over {num_processes} processes')
