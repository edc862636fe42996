"""ResNet and ResNeXt backbones in torchvision's layout, NHWC, with frozen BatchNorm.

torchvision layout: a 7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages of residual blocks;
in a bottleneck the stride sits on the 3x3 conv ("ResNet v1.5"); the shortcut is a strided 1x1
conv followed by BatchNorm. Module names follow torchvision's ``state_dict`` keys so that
``dla_jax.tools.import_torchvision`` maps weights one to one.

BatchNorm never updates its statistics; ``norm`` says what trains:
  'bn_eval': MMDetection's ResNet with ``norm_cfg=dict(type='BN', requires_grad=True)`` and
    ``norm_eval=True`` (configs/atss/atss_r50_fpn_1x_coco.py): ``mean`` and ``var`` are
    constants in the ``batch_stats`` collection, the affine ``scale`` and ``bias`` are
    parameters, trained outside the frozen stages;
  'frozen_bn': all four are constants in ``batch_stats`` (the ATSS authors' code base,
    maskrcnn-benchmark's FrozenBatchNorm2d, and torchvision's detectors).
Constant statistics only make sense for ImageNet-initialised weights; a backbone trained from
scratch (the tiny synthetic-data configs) uses 'group_norm' instead, trainable GroupNorm in
place of every BatchNorm (as in He et al., "Rethinking ImageNet Pre-training", 2019).
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


BN_EPS = 1e-5  # torchvision's BatchNorm2d and FrozenBatchNorm2d.


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  """Block type and depth of one architecture, in torchvision's terms."""
  bottleneck: bool
  stage_sizes: tuple[int, int, int, int]
  groups: int = 1
  width_per_group: int = 64


ARCHITECTURES = {
    'resnet18': ResNetSpec(False, (2, 2, 2, 2)),
    'resnet34': ResNetSpec(False, (3, 4, 6, 3)),
    'resnet50': ResNetSpec(True, (3, 4, 6, 3)),
    'resnet101': ResNetSpec(True, (3, 4, 23, 3)),
    'resnext101_32x4d': ResNetSpec(True, (3, 4, 23, 3), groups=32, width_per_group=4),
    'resnext101_64x4d': ResNetSpec(True, (3, 4, 23, 3), groups=64, width_per_group=4),
}


def _conv(features: int, kernel: int, stride: int, groups: int = 1, name: str | None = None, *,
          dtype: Any, conv_general_dilated: Callable | None) -> nn.Conv:
  """A bias-free conv padded like torch (``kernel // 2`` on each side)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 feature_group_count=groups, use_bias=False, dtype=dtype,
                 kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                 conv_general_dilated=conv_general_dilated, name=name)


class FrozenBatchNorm(nn.Module):
  """BatchNorm in inference mode with constant statistics: ``x * scale' + bias'``.

  ``scale' = scale / sqrt(var + eps)`` and ``bias' = bias - mean * scale'``. Initialised to the
  identity (scale 1, bias 0, mean 0, var 1). ``mean`` and ``var`` are ``batch_stats``; so are
  ``scale`` and ``bias`` unless ``trainable_affine``, which makes them ``params``.
  """
  dtype: Any = jnp.float32
  trainable_affine: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    stat = lambda name, init: self.variable('batch_stats', name, init, (c,), jnp.float32).value
    if self.trainable_affine:
      scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
      bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    else:
      scale = stat('scale', jnp.ones)
      bias = stat('bias', jnp.zeros)
    mean = stat('mean', jnp.zeros)
    var = stat('var', jnp.ones)
    mul = scale * jax.lax.rsqrt(var + BN_EPS)
    return x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); the first carries the stride."""
  planes: int
  stride: int
  conv: Callable[..., nn.Conv]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jax.Array, finish: Callable | None = None) -> jax.Array:
    """x: [B, H, W, C] -> [B, H/stride, W/stride, planes]; ``finish``: see ``_block_output``."""
    y = self.conv(self.planes, 3, self.stride, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, 3, 1, name='conv2')(y)
    y = self.norm(name='bn2')(y)
    return _block_output(y + _shortcut(x, self.planes, self.stride, self.conv, self.norm),
                         finish)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, grouped for ResNeXt), 1x1 expand by 4."""
  planes: int
  stride: int
  conv: Callable[..., nn.Conv]
  norm: Callable[..., nn.Module]
  groups: int = 1
  width_per_group: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, finish: Callable | None = None) -> jax.Array:
    """x: [B, H, W, C] -> [B, H/stride, W/stride, 4 planes]; ``finish``: see ``_block_output``."""
    width = self.planes * self.width_per_group // 64 * self.groups
    y = self.conv(width, 1, 1, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(width, 3, self.stride, self.groups, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.planes * 4, 1, 1, name='conv3')(y)
    y = self.norm(name='bn3')(y)
    return _block_output(y + _shortcut(x, self.planes * 4, self.stride, self.conv, self.norm),
                         finish)


def _block_output(residual_sum: jax.Array, finish: Callable | None) -> jax.Array:
  """ReLU of a block's residual sum, then ``finish`` when given (``ResNet.block_output``)."""
  y = nn.relu(residual_sum)
  return y if finish is None else finish(y)


def _shortcut(x: jax.Array, features: int, stride: int, conv: Callable[..., nn.Conv],
              norm: Callable[..., nn.Module]) -> jax.Array:
  """Identity, or torchvision's ``downsample`` (strided 1x1 conv + BN) where the shape changes.

  Called from inside a block's compact ``__call__``, so the modules belong to that block.
  """
  if stride == 1 and x.shape[-1] == features:
    return x
  y = conv(features, 1, stride, name='downsample_conv')(x)
  return norm(name='downsample_bn')(y)


class ResNet(nn.Module):
  """ResNet/ResNeXt trunk returning C3, C4, C5 (strides 8, 16, 32).

  Attributes:
    arch: architecture name, a key of ``ARCHITECTURES``.
    width: channels of the stem and of stage 1's 3x3 convs (64 in torchvision).
    frozen_stages: stem (stage 0) and stages 1..frozen_stages get no gradient.
    norm: 'bn_eval' or 'frozen_bn' (ImageNet-initialised backbones) or 'group_norm' (training
      from scratch); see the module docstring.
    gn_groups: GroupNorm groups when ``norm='group_norm'``.
    dtype: compute dtype.
    conv_general_dilated: the convolution, None for ``lax``'s (``dla_jax.cpu.ModelOptions``).
    block_output: given the stem's output, the function applied to each block's output; None
      for none (``dla_jax.cpu.ModelOptions``).
  """
  arch: str
  width: int = 64
  frozen_stages: int = 1
  norm: str = 'frozen_bn'
  gn_groups: int = 32
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None
  block_output: Callable | None = None

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    """images: [B, H, W, 3] -> [C3 [B, H/8, W/8, *], C4 [B, H/16, ...], C5 [B, H/32, ...]]."""
    spec = ARCHITECTURES[self.arch]
    if self.norm == 'group_norm':
      norm = functools.partial(nn.GroupNorm, self.gn_groups, dtype=self.dtype)
    else:
      norm = functools.partial(FrozenBatchNorm, self.dtype, self.norm == 'bn_eval')
    conv = functools.partial(_conv, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    x = conv(self.width, 7, 2, name='conv1')(images.astype(self.dtype))
    x = nn.relu(norm(name='bn1')(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    finish = self.block_output(x) if self.block_output else None
    if self.frozen_stages >= 0:
      x = jax.lax.stop_gradient(x)
    features = []
    for stage, blocks in enumerate(spec.stage_sizes):
      planes = self.width * 2**stage
      for i in range(blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        name = f'layer{stage + 1}_{i}'
        if spec.bottleneck:
          x = Bottleneck(planes, stride, conv, norm, spec.groups, spec.width_per_group,
                         name=name)(x, finish)
        else:
          x = BasicBlock(planes, stride, conv, norm, name=name)(x, finish)
      if stage + 1 <= self.frozen_stages:
        x = jax.lax.stop_gradient(x)
      features.append(x)
    return features[1:]


def stage_of(module_name: str) -> int:
  """Stage of a top-level backbone module: 0 for the stem (conv1, bn1), S for ``layerS_i``."""
  if module_name.startswith('layer'):
    return int(module_name[len('layer'):].split('_')[0])
  return 0
