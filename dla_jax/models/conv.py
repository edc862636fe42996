"""2-D convolution whose kernel gradient is computed as matmuls, for XLA:CPU.

XLA:CPU runs a forward NHWC convolution through a fast kernel (284 GFLOP/s on the 2-core
development machine for a 3x3, 256 -> 256 conv at 64 x 64, batch 2), but the convolution that
computes the kernel's gradient runs about 6.6x slower, so that a ResNet-50-FPN train step spent
5x its forward time in the backward pass. Here the kernel gradient is one matmul per kernel tap,

  dW[i, j] = sum over n, h, w of  x_pad[n, s*h + i, s*w + j, :]^T  dy[n, h, w, :],

which XLA:CPU runs at matmul speed; the input gradient is XLA's own. It pays for wide
convolutions over many positions and loses for narrow ones (kernel-gradient time, matmul over
XLA's, measured on the development machine):

  3x3, 256 -> 256, 2 x 64 x 64: 0.35     1x1, 256 -> 256, 2 x 64 x 64: 0.24
  3x3, 128 -> 128, 2 x 64 x 64: 0.52     3x3, 128 -> 128, 16 x 16 x 16: 1.22
  3x3, 64 -> 64, 2 x 64 x 64: 1.20       3x3, 64 -> 64, 2 x 128 x 128: 1.02

so ``model.conv_backward='auto'`` uses it on CPU for convolutions with at least
``MIN_CHANNELS`` input (per group) and output channels and ``MIN_WORK`` = C_in/groups * C_out *
output positions, and XLA's own gradient elsewhere and on GPU/TPU, where XLA's convolutions are
fast; 'matmul' uses it for every convolution and 'xla' for none. ``conv_function`` gives the
function for Flax's ``nn.Conv(conv_general_dilated=...)``.
"""

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

CONV_BACKWARDS = ('auto', 'matmul', 'xla')
MIN_CHANNELS = 128
MIN_WORK = 2**27
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_function(conv_backward: str) -> Callable | None:
  """The convolution for ``model.conv_backward`` on this backend; None is ``lax``'s own."""
  if conv_backward not in CONV_BACKWARDS:
    raise ValueError(f'model.conv_backward: {conv_backward!r} is not one of {CONV_BACKWARDS}')
  if conv_backward == 'matmul':
    return functools.partial(conv_general_dilated, always_matmul=True)
  if conv_backward == 'auto' and jax.default_backend() == 'cpu':
    return conv_general_dilated
  return None


def _matmul_pays(out_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
  n, ho, wo, cout = out_shape
  cin_group = kernel_shape[2]
  return (min(cin_group, cout) >= MIN_CHANNELS and
          cin_group * cout * n * ho * wo >= MIN_WORK)


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
                         precision=None, *, always_matmul: bool = False, **unsupported):
  """``lax.conv_general_dilated`` for 2-D NHWC/HWIO convolutions without dilation, with the
  matmul kernel gradient where it pays (always with ``always_matmul``).
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
  out_shape = jax.eval_shape(lambda: _xla_conv(lhs, rhs, strides, padding, feature_group_count,
                                               precision)).shape
  if always_matmul or _matmul_pays(out_shape, rhs.shape):
    return _conv(lhs, rhs, strides, padding, feature_group_count, precision)
  return _xla_conv(lhs, rhs, strides, padding, feature_group_count, precision)
