"""Feature pyramid P3..P7 on C3..C5, as ATSS uses it: MMDetection v2's FPN with start_level=1,
add_extra_convs='on_output' and num_outs=5 (configs/atss/atss_r50_fpn_1x_coco.py)."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Strides of P3..P7 in input pixels.
STRIDES = (8, 16, 32, 64, 128)


def _upsample_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour upsampling of [B, h, w, C] to [B, H, W, C] (F.interpolate's 'nearest')."""
  h, w = x.shape[1:3]
  if hw[0] % h == 0 and hw[1] % w == 0:
    return jnp.repeat(jnp.repeat(x, hw[0] // h, axis=1), hw[1] // w, axis=2)
  rows = (jnp.arange(hw[0]) * h) // hw[0]
  cols = (jnp.arange(hw[1]) * w) // hw[1]
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """Lateral 1x1 convs, top-down nearest-upsample sums, 3x3 output convs; P6 = 3x3/2 conv on P5's
  output and P7 = 3x3/2 conv on P6, or on ReLU(P6).

  Attributes:
    channels: output channels of every level (256 in ATSS).
    relu_before_p7: ReLU between P6 and P7's conv. MMDetection's ATSS config leaves FPN's
      relu_before_extra_convs at its default, False; its FCOS config and the ATSS authors' own
      code (maskrcnn-benchmark's LastLevelP6P7) apply it.
    dtype: compute dtype.
    conv_general_dilated: the convolution (``models.conv``), None for ``lax``'s.
  """
  channels: int = 256
  relu_before_p7: bool = False
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
    """features: [C3, C4, C5], each [B, H_l, W_l, C_l].

    Returns [P3, ..., P7], each [B, H_l, W_l, channels].
    """
    conv = lambda kernel, stride, name: nn.Conv(
        self.channels, (kernel, kernel), (stride, stride),
        padding=((kernel // 2, kernel // 2),) * 2, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        conv_general_dilated=self.conv_general_dilated, name=name)
    laterals = [conv(1, 1, f'lateral{i}')(c) for i, c in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + _upsample_to(laterals[i], laterals[i - 1].shape[1:3])
    outs = [conv(3, 1, f'output{i}')(x) for i, x in enumerate(laterals)]
    p6 = conv(3, 2, 'p6')(outs[-1])
    p7 = conv(3, 2, 'p7')(nn.relu(p6) if self.relu_before_p7 else p6)
    return outs + [p6, p7]
