"""The detection head: ATSS's shared classification and regression towers plus a quality branch.

Shared over the FPN levels (one set of weights), as in ATSS (Zhang et al., CVPR 2020):
  cls tower: head_convs x (3x3 conv, GroupNorm, ReLU) -> 3x3 conv -> C class logits;
  reg tower: head_convs x (3x3 conv, GroupNorm, ReLU) -> 3x3 conv -> 4 box values, times a
    learnable scale per level;
  quality branch, one logit per location that ranks detections at test time, by ``model.head``:
    'dla' (the paper, section 3.3), the metric branch: concat(cls tower, reg tower) -> 1x1 conv
      -> ReLU -> 3x3 conv, trained towards the assignment metric m (eq. 7);
    'atss' (the baseline), ATSS's centerness: a 3x3 conv on the reg tower, trained towards the
      centerness of each positive's prior centre in its GT (MMDetection v2's ATSSHead).
"""

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _conv(features: int, kernel: int, dtype: Any, name: str, use_bias: bool = True,
          bias: float = 0.0, conv_general_dilated: Callable | None = None) -> nn.Conv:
  """Head conv with MMDetection's head init: normal(std=0.01) weights, constant bias."""
  return nn.Conv(features, (kernel, kernel), padding=((kernel // 2, kernel // 2),) * 2,
                 use_bias=use_bias, dtype=dtype,
                 kernel_init=nn.initializers.normal(0.01),
                 bias_init=nn.initializers.constant(bias),
                 conv_general_dilated=conv_general_dilated, name=name)


class Tower(nn.Module):
  """``num_convs`` x (3x3 conv without bias, GroupNorm, ReLU)."""
  channels: int
  num_convs: int
  gn_groups: int
  dtype: Any
  conv_general_dilated: Callable | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_convs):
      x = _conv(self.channels, 3, self.dtype, f'conv{i}', use_bias=False,
                conv_general_dilated=self.conv_general_dilated)(x)
      x = nn.GroupNorm(self.gn_groups, dtype=self.dtype, name=f'gn{i}')(x)
      x = nn.relu(x)
    return x


class DetectionHead(nn.Module):
  """Attributes:
    num_classes: number of foreground classes C (sigmoid classification, no background logit).
    channels: tower width (256 in ATSS).
    num_convs: convs per tower (4 in ATSS).
    gn_groups: GroupNorm groups (32 in ATSS).
    metric_channels: output channels of the metric branch's 1x1 reduce conv ('dla').
    num_levels: number of FPN levels, one learnable regression scale each.
    prior_mode: 'point' (box values are non-negative l, t, r, b distances in strides: ReLU of
      the scaled output, as FCOS with normalised targets) or 'anchor' (deltas on the square
      anchor, MMDetection's DeltaXYWH with stds (0.1, 0.1, 0.2, 0.2)).
    prior_prob: initial foreground probability of the class logits, and of the metric logits
      ('dla').
    quality: 'dla' (metric branch) or 'atss' (centerness), see the module docstring.
    dtype: compute dtype; the outputs are float32.
    conv_general_dilated: the convolution (``models.conv``), None for ``lax``'s.
  """
  num_classes: int
  channels: int = 256
  num_convs: int = 4
  gn_groups: int = 32
  metric_channels: int = 256
  num_levels: int = 5
  prior_mode: str = 'point'
  prior_prob: float = 0.01
  quality: str = 'dla'
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None

  @nn.compact
  def __call__(self, pyramid: Sequence[jax.Array]) -> dict[str, jax.Array]:
    """pyramid: [P3, ..., P7], each [B, H_l, W_l, F].

    Returns float32 arrays over the N = sum(H_l * W_l) locations, level by level, row-major:
      cls_logits [B, N, C], box_reg [B, N, 4], quality_logits [B, N] (the metric for 'dla',
      the centerness for 'atss').
    """
    if len(pyramid) != self.num_levels:
      raise ValueError(f'head expects {self.num_levels} levels, got {len(pyramid)}')
    bias = -math.log((1 - self.prior_prob) / self.prior_prob)
    tower = functools.partial(Tower, self.channels, self.num_convs, self.gn_groups, self.dtype,
                              self.conv_general_dilated)
    cls_tower, reg_tower = tower(name='cls_tower'), tower(name='reg_tower')
    conv = functools.partial(_conv, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    cls_out = conv(self.num_classes, 3, name='cls_logits', bias=bias)
    reg_out = conv(4, 3, name='box_reg')
    if self.quality == 'dla':
      metric_reduce = conv(self.metric_channels, 1, name='metric_reduce')
      # The metric logit starts at the same prior as the class logits: like the focal loss,
      # eq. 7 pushes the many negatives towards 0, and a 0.5 start would open with a large loss.
      metric_out = conv(1, 3, name='metric_logits', bias=bias)
      quality = lambda cls_feat, reg_feat: metric_out(
          nn.relu(metric_reduce(jnp.concatenate([cls_feat, reg_feat], -1))))
    else:
      # MMDetection v2 ATSSHead: atss_centerness on the reg tower, normal(0.01) init, bias 0.
      centerness_out = conv(1, 3, name='centerness')
      quality = lambda cls_feat, reg_feat: centerness_out(reg_feat)

    outputs = {'cls_logits': [], 'box_reg': [], 'quality_logits': []}
    for level, x in enumerate(pyramid):
      b, h, w, _ = x.shape
      cls_feat = cls_tower(x)
      reg_feat = reg_tower(x)
      scale = self.param(f'scale{level}', nn.initializers.ones, (), jnp.float32)
      box = reg_out(reg_feat).astype(jnp.float32) * scale
      if self.prior_mode == 'point':
        box = nn.relu(box)
      outputs['cls_logits'].append(cls_out(cls_feat).reshape(b, h * w, self.num_classes))
      outputs['box_reg'].append(box.reshape(b, h * w, 4))
      outputs['quality_logits'].append(quality(cls_feat, reg_feat).reshape(b, h * w))
    return {k: jnp.concatenate(v, axis=1).astype(jnp.float32) for k, v in outputs.items()}
