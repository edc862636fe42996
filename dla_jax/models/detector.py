"""The whole detector, built from a config: backbone -> FPN -> head (DLA's or ATSS's)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import errors
from dla_jax.models import conv as conv_lib
from dla_jax.models import fpn as fpn_lib
from dla_jax.models import head as head_lib
from dla_jax.models import pretrained
from dla_jax.models import resnet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class Detector(nn.Module):
  """Backbone, FPN and head; parameter subtrees ``backbone``, ``fpn`` and ``head``."""
  backbone: resnet.ResNet
  fpn: fpn_lib.FPN
  head: head_lib.DetectionHead

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """images: [B, H, W, 3] normalised, H and W multiples of 32 -> the head's outputs
    (cls_logits [B, N, C], box_reg [B, N, 4], quality_logits [B, N], float32)."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'images must be [batch, height, width, 3] (NHWC, RGB); got shape '
                       f'{tuple(images.shape)}')
    return self.head(self.fpn(self.backbone(images)))


def compute_dtype_name(config: ml_collections.ConfigDict, backend: str | None = None) -> str:
  """``model.dtype`` on ``backend`` (default JAX's): 'auto' is bfloat16 on GPU and TPU, float32
  on the CPU, whose convolutions have no bfloat16 kernels."""
  name = config.model.dtype
  if name not in (*DTYPES, 'auto'):
    raise errors.ConfigError(f'model.dtype: {name!r} is not one of {sorted(DTYPES) + ["auto"]}')
  if name == 'auto':
    return 'float32' if (backend or jax.default_backend()) == 'cpu' else 'bfloat16'
  return name


def compute_dtype(config: ml_collections.ConfigDict, backend: str | None = None) -> Any:
  return DTYPES[compute_dtype_name(config, backend)]


def build_detector(config: ml_collections.ConfigDict, backend: str | None = None) -> Detector:
  """The detector of ``config.model`` for ``config.data.num_classes`` classes, as computed on
  ``backend`` ('cpu', 'gpu' or 'tpu'; default JAX's own): XLA:CPU gets fusion barriers and, with
  ``conv_impl='auto'``, its own convolutions. ``dla_jax.tools.step_cost`` builds a GPU's graph on
  the CPU."""
  m = config.model
  dtype = compute_dtype(config, backend)
  resnet.get_spec(m.backbone)  # fails early, naming the field, on an unknown architecture
  if m.head not in head_lib.HEADS:
    raise errors.ConfigError(f'model.head: {m.head!r} is not one of {head_lib.HEADS}')
  if m.prior not in head_lib.PRIOR_MODES:
    raise errors.ConfigError(f'model.prior: {m.prior!r} is not one of {head_lib.PRIOR_MODES}')
  for field in ('fpn_channels', 'head_channels', 'metric_channels'):
    if m[field] <= 0:
      raise errors.ConfigError(f'model.{field}: must be positive, got {m[field]}')
  if m.backbone_norm not in resnet.NORMS:
    raise errors.ConfigError(f'model.backbone_norm: {m.backbone_norm!r} is not one of '
                             f'{resnet.NORMS}')
  if m.backbone_norm == 'group_norm' and m.backbone_width % m.gn_groups:
    raise errors.ConfigError(f'model.gn_groups: {m.gn_groups} does not divide model.backbone_width '
                             f'({m.backbone_width})')
  if m.head_channels % m.gn_groups:
    raise errors.ConfigError(f'model.gn_groups: {m.gn_groups} does not divide model.head_channels '
                             f'({m.head_channels})')
  if config.data.num_classes < 1:
    raise errors.ConfigError(f'data.num_classes: must be at least 1, got {config.data.num_classes}')
  backend = backend or jax.default_backend()
  conv = conv_lib.conv_function(m.conv_impl, backend)
  on_cpu = backend == 'cpu'
  return Detector(
      backbone=resnet.ResNet(m.backbone, m.backbone_width, m.frozen_stages, m.backbone_norm,
                             m.gn_groups, dtype, conv, fusion_barriers=on_cpu),
      fpn=fpn_lib.FPN(m.fpn_channels, m.fpn_relu_before_p7, dtype, conv),
      head=head_lib.DetectionHead(config.data.num_classes, m.head_channels, m.head_convs,
                                  m.gn_groups, m.metric_channels, len(fpn_lib.STRIDES), m.prior,
                                  m.prior_prob, m.head, dtype, conv))


def forward_flops(config: ml_collections.ConfigDict) -> float:
  """FLOPs of the network's forward pass on one image of ``config.data.image_size``, as direct
  convolutions compute them: counted by XLA's cost model through its own convolutions,
  whatever ``model.conv_impl`` picks on this backend (Winograd does fewer)."""
  counted = config.copy_and_resolve_references()
  counted.model.conv_impl = 'xla'
  model = build_detector(counted)
  images = jax.ShapeDtypeStruct((1, *config.data.image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return jax.jit(model.apply).lower(variables, images).cost_analysis()['flops']


def abstract_variables(model: Detector) -> dict[str, Any]:
  """Shapes and dtypes of ``init_variables``'s result (``jax.ShapeDtypeStruct`` leaves), without
  computing or reading anything."""
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def init_variables(model: Detector, config: ml_collections.ConfigDict,
                   rng: jax.Array) -> dict[str, Any]:
  """Initial ``{'params', 'batch_stats'}``, float32; the backbone's are read from
  ``config.model.backbone_init`` when it is set: an orbax folder written by
  ``dla-import-torchvision`` or a torchvision ``state_dict`` file (read with torch). Parameter
  shapes do not depend on the image size, so a small dummy image is used.

  Raises:
    ConfigError: naming ``model.backbone_norm`` when weights are given to a GroupNorm backbone,
      or ``model.backbone_init`` and the file when they cannot be read or do not fit.
  """
  m = config.model
  backbone = {}
  if m.backbone_init:  # read before the compile, so that a wrong file is reported at once
    pretrained.check_backbone_init(m)  # the weights need a BatchNorm backbone
    backbone = pretrained.norm_layout(
        pretrained.read_backbone(m.backbone_init, m.backbone, m.backbone_width), m.backbone_norm)
  variables = jax.jit(model.init)(rng, jnp.zeros((1, 64, 64, 3), jnp.float32))
  for collection, tree in backbone.items():
    variables[collection]['backbone'] = tree
  return variables
