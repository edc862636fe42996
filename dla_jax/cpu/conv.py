"""2-D convolutions for XLA:CPU: 1x1 ones as matmuls, Winograd for 3x3 stride-1 ones, matmul
kernel gradients for other wide ones, XLA's own everywhere else.

XLA:CPU runs a forward NHWC convolution through a fast kernel, but the convolution that computes
the kernel's gradient runs several times slower, so that a ResNet-50-FPN train step spends most
of its time in the backward pass
(docs/performance.md#what-each-change-bought-train-step-r50-at-512-x-512-batch-2), and its 1x1
convolutions and their gradients run at a fraction of its matmul speed
(docs/performance.md#what-each-change-bought-1). Three replacements:

- 1x1 ungrouped convolutions are a 2-D matmul over the (strided) positions, and so are their
  gradients;
- 3x3, stride-1, ungrouped convolutions (the head's towers, the FPN's outputs, most of the
  backbone's 3x3s) use Winograd's F(4x4, 3x3) (``cpu.winograd``): 2.25 multiplies per output
  instead of 9, in the forward pass and in both gradients;
- for the other convolutions, the kernel gradient is one matmul per kernel tap,

    dW[i, j] = sum over n, h, w of  x_pad[n, s*h + i, s*w + j, :]^T  dy[n, h, w, :],

  which XLA:CPU runs at matmul speed; the input gradient is XLA's own. It pays for wide
  convolutions over many positions and loses for narrow ones, hence ``MIN_CHANNELS`` and
  ``MIN_WORK`` (docs/performance.md#matmul-kernel-gradients-per-convolution).

``model.conv_impl`` chooses (``implementation``). 'auto' picks: the matmul for 1x1 convolutions;
Winograd for float32 3x3 stride-1 ones with enough output tiles to pay for transforming the
kernel (``MIN_TILES_PER_WEIGHT``) and enough work to pay for its longer compilation
(``MIN_WINOGRAD_MACS``); the matmul kernel gradient for other ones with at least
``MIN_CHANNELS`` input (per group) and output channels and ``MIN_WORK`` = C_in/groups * C_out *
output positions; XLA's own otherwise. 'winograd' uses Winograd for every 3x3 stride-1
convolution, the matmul for 1x1 ones and XLA's own for the rest; 'matmul' the matmul kernel
gradient for every convolution. ``dla_jax.cpu.model_options`` hands ``conv_general_dilated`` to
Flax's ``nn.Conv`` on the CPU only: on GPU and TPU XLA's convolutions are fast.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from dla_jax.cpu import winograd

CONV_IMPLS = ('auto', 'winograd', 'matmul', 'xla')
MIN_CHANNELS = 128
MIN_WORK = 2**27
# Winograd when output tiles >= C_in * C_out * this and the convolution has at least
# MIN_WINOGRAD_MACS multiply-adds (positions * 9 * C_in * C_out): the kernel transform's memory
# traffic grows with C_in * C_out and the matmul work it saves with tiles * C_in * C_out, and a
# Winograd convolution compiles several times longer than XLA's own, which small convolutions
# do not earn back (docs/performance.md#winograd-against-xla-per-convolution).
MIN_TILES_PER_WEIGHT = 1 / 1024
MIN_WINOGRAD_MACS = 2**27
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _winograd_applies(kernel_shape: Sequence[int], strides: tuple[int, int],
                      padding: tuple[tuple[int, int], ...], groups: int) -> bool:
  return (tuple(kernel_shape[:2]) == (3, 3) and strides == (1, 1) and groups == 1 and
          all(0 <= p <= 2 for pair in padding for p in pair))


def pointwise(x: jax.Array, w: jax.Array, strides: tuple[int, int], precision: Any) -> jax.Array:
  """A 1x1 convolution without padding as one matmul: x [N, H, W, C_in], w [1, 1, C_in, C_out]
  -> [N, ceil(H / s_h), ceil(W / s_w), C_out]."""
  x = x[:, ::strides[0], ::strides[1]]
  n, h, wd, c = x.shape
  y = lax.dot_general(x.reshape(n * h * wd, c), w.reshape(c, -1), (((1,), (0,)), ((), ())),
                      precision=precision)
  return y.reshape(n, h, wd, -1)


def _winograd_pays(out_shape: Sequence[int], kernel_shape: Sequence[int], dtype: Any) -> bool:
  n, ho, wo, _ = out_shape
  th, tw = winograd.tiles(ho, wo)
  weights = kernel_shape[2] * kernel_shape[3]
  return (dtype == jnp.float32 and n * th * tw >= weights * MIN_TILES_PER_WEIGHT and
          n * ho * wo * 9 * weights >= MIN_WINOGRAD_MACS)


def _matmul_pays(out_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
  n, ho, wo, cout = out_shape
  cin_group = kernel_shape[2]
  return (min(cin_group, cout) >= MIN_CHANNELS and
          cin_group * cout * n * ho * wo >= MIN_WORK)


def implementation(impl: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
                   strides: tuple[int, int], padding: tuple[tuple[int, int], ...], groups: int,
                   dtype: Any) -> str:
  """Which computation ``impl`` picks for a convolution: 'pointwise' (1x1 as a matmul),
  'winograd', 'matmul' (matmul kernel gradient) or 'xla'.

  Args:
    impl: one of ``CONV_IMPLS`` but 'xla'.
    x_shape: [N, H, W, C_in]; kernel_shape: [kh, kw, C_in / groups, C_out].
    strides, padding, groups, dtype: the convolution's.
  """
  out_shape = jax.eval_shape(lambda x, w: _xla_conv(x, w, strides, padding, groups, None),
                             jax.ShapeDtypeStruct(x_shape, dtype),
                             jax.ShapeDtypeStruct(kernel_shape, dtype)).shape
  unpadded = not any(p for pair in padding for p in pair)
  if (impl in ('auto', 'winograd') and tuple(kernel_shape[:2]) == (1, 1) and groups == 1 and
      unpadded):
    return 'pointwise'
  if _winograd_applies(kernel_shape, strides, padding, groups) and (
      impl == 'winograd' or impl == 'auto' and _winograd_pays(out_shape, kernel_shape, dtype)):
    return 'winograd'
  if impl == 'matmul' or impl == 'auto' and _matmul_pays(out_shape, kernel_shape):
    return 'matmul'
  return 'xla'


def _xla_conv(x, w, strides, padding, groups, precision):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC,
                                  feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, groups, precision):
  return _xla_conv(x, w, strides, padding, groups, precision)


def _conv_fwd(x, w, strides, padding, groups, precision):
  return _xla_conv(x, w, strides, padding, groups, precision), (x, w)


def kernel_gradient(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int],
                    strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                    groups: int = 1, precision: Any = None) -> jax.Array:
  """dL/dW of an NHWC/HWIO convolution, one matmul per kernel tap.

  Args:
    x: [N, H, W, C_in] the convolution's input.
    dy: [N, H_out, W_out, C_out] the gradient of its output.
    kernel_shape: (kh, kw, C_in / groups, C_out).
    strides, padding, groups: the convolution's.

  Returns:
    [kh, kw, C_in / groups, C_out] float32 (the caller casts).
  """
  kh, kw, cin_group, cout = kernel_shape
  n, ho, wo, _ = dy.shape
  (sh, sw) = strides
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  rows = []
  for i in range(kh):
    taps = []
    for j in range(kw):
      patch = lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                                           xp.shape[3]), (1, sh, sw, 1))
      if groups == 1:  # a plain 2-D dot: XLA:CPU reads the transposed operand in place
        grad = lax.dot_general(patch.reshape(-1, cin_group), dy.reshape(-1, cout),
                               (((0,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)
      else:
        grad = jnp.einsum('mgi,mgo->igo', patch.reshape(-1, groups, cin_group),
                          dy.reshape(-1, groups, cout // groups), precision=precision,
                          preferred_element_type=jnp.float32).reshape(cin_group, cout)
      taps.append(grad)
    rows.append(jnp.stack(taps))
  return jnp.stack(rows)


def _conv_bwd(strides, padding, groups, precision, residuals, dy):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x: _xla_conv(x, w, strides, padding, groups, precision), x)
  (dx,) = input_vjp(dy)
  dw = kernel_gradient(x, dy, w.shape, strides, padding, groups, precision)
  return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, *, impl: str = 'auto', **unsupported):
  """``lax.conv_general_dilated`` for 2-D NHWC/HWIO convolutions without dilation, computed as
  ``impl`` (one of ``CONV_IMPLS`` but 'xla') says.
  lhs: [N, H, W, C_in], rhs: [kh, kw, C_in / groups, C_out]."""
  dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  if lhs.ndim != 4 or dilated or unsupported:
    raise ValueError('conv_general_dilated: only 2-D convolutions without dilation, got '
                     f'input {lhs.shape}, dilations {lhs_dilation} {rhs_dilation}, '
                     f'{sorted(unsupported)}')
  if dimension_numbers is not None:
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != expected:
      raise ValueError(f'conv_general_dilated: only NHWC/HWIO, got {dimension_numbers}')
  strides = tuple(window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  padding = tuple(tuple(p) for p in padding)
  chosen = implementation(impl, lhs.shape, rhs.shape, strides, padding, feature_group_count,
                          lhs.dtype)
  if chosen == 'pointwise':
    return pointwise(lhs, rhs, strides, precision)
  if chosen == 'winograd':
    return winograd.conv3x3(lhs, rhs, padding, precision)
  if chosen == 'matmul':
    return _conv(lhs, rhs, strides, padding, feature_group_count, precision)
  return _xla_conv(lhs, rhs, strides, padding, feature_group_count, precision)
