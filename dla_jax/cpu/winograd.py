"""3x3 stride-1 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for XLA:CPU.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016: each 4 x 4
output tile of a 3x3 convolution is

  Y = A^T [ (G g G^T) * (B^T d B) ] A,

with d the 6 x 6 input tile that covers it, g the 3 x 3 kernel and * the element-wise product,
which over channels becomes 36 independent matmuls [tiles, C_in] x [C_in, C_out]. That is
36 / 16 = 2.25 multiplies per output and input channel instead of 9. The matrices are the
paper's, for the interpolation points 0, +-1, +-2 and infinity.

Both gradients stay in that form (``custom_vjp``, with the forward pass's transformed U and V
as residuals), sharing dM = A dY A^T, the output transform's transpose applied to dy:

- kernel gradient: dV = U^T dM per tile position (36 matmuls over the tiles), dW = G^T dV G;
- input gradient: dU = dM V^T per tile position, then the input transform's transpose, which
  adds the overlapping 6 x 6 tiles back into the input (``input_transform_transpose``).

The transforms are sums of strided slices with the matrices' constants; each stage is stacked
into one array so that XLA:CPU runs it as a single loop over memory.

Float32 error against a direct convolution is about 1e-5 relative (``tests/test_winograd.py``
pins it); in bfloat16 the transforms lose too much, so ``cpu.conv``'s 'auto' picks this for
float32 only.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TILE = 4  # output tile side m
SPAN = TILE + 2  # input tile side m + r - 1

# F(4, 3) (Lavin and Gray, section 4.2).
B_T = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)


def _combine(coefficients: np.ndarray, terms: Sequence[jax.Array]) -> jax.Array:
  """sum_i coefficients[i] * terms[i], skipping zero coefficients."""
  total = None
  for c, term in zip(coefficients, terms):
    if c == 0:
      continue
    scaled = term if c == 1 else -term if c == -1 else term * jnp.asarray(c, term.dtype)
    total = scaled if total is None else total + scaled
  return total


def _apply(matrix: np.ndarray, terms: Sequence[jax.Array], axis: int) -> jax.Array:
  """The rows of ``matrix`` applied to ``terms`` (one per column), stacked at ``axis``."""
  return jnp.stack([_combine(row, terms) for row in matrix], axis)


def tiles(height: int, width: int) -> tuple[int, int]:
  """Output tiles (rows, columns) covering a [height, width] output."""
  return -(-height // TILE), -(-width // TILE)


def _padded_growth(padding: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int]:
  """Output size minus input size (rows, columns) of a 3x3 stride-1 conv with ``padding``."""
  (top, bottom), (left, right) = padding
  return top + bottom - 2, left + right - 2


def input_transform(x: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """B^T d B for every input tile.

  Args:
    x: [N, H, W, C] the convolution's input; padding its ((top, bottom), (left, right)).

  Returns:
    [36, N * th * tw, C], th x tw tiles of the [H_out, W_out] output, row-major.
  """
  n, h, w, c = x.shape
  (top, _), (left, _) = padding
  grow_h, grow_w = _padded_growth(padding)
  th, tw = tiles(h + grow_h, w + grow_w)
  xp = jnp.pad(x, ((0, 0), (top, TILE * th + 2 - h - top), (left, TILE * tw + 2 - w - left),
                   (0, 0)))
  rows = [xp[:, i:i + TILE * th:TILE] for i in range(SPAN)]  # [N, th, Wp, C] each
  t = _apply(B_T, rows, 0)  # [6, N, th, Wp, C]
  cols = [t[:, :, :, j:j + TILE * tw:TILE] for j in range(SPAN)]  # [6, N, th, tw, C] each
  return _apply(B_T, cols, 1).reshape(SPAN * SPAN, n * th * tw, c)


def _overlap_add(parts: Sequence[jax.Array], axis: int) -> jax.Array:
  """The transpose of taking the 6 strided slices ``x[4 q + j]`` along ``axis``.

  Args:
    parts: 6 arrays, each T long on ``axis``.

  Returns:
    out, 4 T + 2 long on ``axis``, with out[4 q + j] = sum of parts[j][q].
  """
  def interleave(group):  # out[4 q + j] = group[j][q], 4 T long
    stacked = jnp.stack(group, axis + 1)
    shape = list(stacked.shape)
    return stacked.reshape(shape[:axis] + [shape[axis] * TILE] + shape[axis + 2:])

  def pad(x, before, after, at):
    widths = [(0, 0)] * x.ndim
    widths[at] = (before, after)
    return jnp.pad(x, widths)

  head = pad(interleave(parts[:TILE]), 0, 2, axis)
  # parts[4] and parts[5] land on 4 (q + 1) + 0 and 4 (q + 1) + 1.
  zeros = jnp.zeros_like(parts[TILE])
  tail = pad(interleave([*parts[TILE:], zeros, zeros]), TILE, 0, axis)
  return head + lax.slice_in_dim(tail, 0, head.shape[axis], axis=axis)


def input_transform_transpose(du: jax.Array, x_shape: Sequence[int],
                              padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """The transpose of ``input_transform``: [36, N * th * tw, C] -> x_shape [N, H, W, C]."""
  n, h, w, c = x_shape
  (top, _), (left, _) = padding
  grow_h, grow_w = _padded_growth(padding)
  th, tw = tiles(h + grow_h, w + grow_w)
  du = du.reshape(SPAN, SPAN, n, th, tw, c)
  cols = [_combine(B_T[:, j], [du[:, b] for b in range(SPAN)]) for j in range(SPAN)]
  t = _overlap_add(cols, 3)  # [6, N, th, Wp, C]
  rows = [_combine(B_T[:, i], [t[a] for a in range(SPAN)]) for i in range(SPAN)]
  xp = _overlap_add(rows, 1)  # [N, Hp, Wp, C]
  return xp[:, top:top + h, left:left + w]


def output_transform(m: jax.Array, n: int, th: int, tw: int) -> jax.Array:
  """A^T M A for every tile: [36, N * th * tw, C] -> [N, 4 th, 4 tw, C]."""
  m = m.reshape(SPAN, SPAN, n, th, tw, m.shape[-1])
  cols = _apply(A_T, [m[:, b] for b in range(SPAN)], 4)  # [6, N, th, tw, 4, C]
  out = _apply(A_T, [cols[a] for a in range(SPAN)], 2)  # [N, th, 4, tw, 4, C]
  return out.reshape(n, TILE * th, TILE * tw, out.shape[-1])


def output_transform_transpose(dy: jax.Array, th: int, tw: int) -> jax.Array:
  """A dY A^T for every tile, the transpose of ``output_transform``:
  [N, H_out, W_out, C] -> [36, N * th * tw, C]."""
  n, h, w, c = dy.shape
  dy = jnp.pad(dy, ((0, 0), (0, TILE * th - h), (0, TILE * tw - w), (0, 0)))
  dy = dy.reshape(n, th, TILE, tw, TILE, c)
  rows = _apply(A_T.T, [dy[:, :, r] for r in range(TILE)], 0)  # [6, N, th, tw, 4, C]
  out = _apply(A_T.T, [rows[..., j, :] for j in range(TILE)], 1)  # [6, 6, N, th, tw, C]
  return out.reshape(SPAN * SPAN, n * th * tw, c)


def kernel_transform(w: jax.Array) -> jax.Array:
  """G g G^T: [3, 3, C_in, C_out] -> [36, C_in, C_out]."""
  rows = _apply(G, [w[i] for i in range(3)], 0)  # [6, 3, C_in, C_out]
  return _apply(G, [rows[:, j] for j in range(3)], 1).reshape(SPAN * SPAN, *w.shape[2:])


def kernel_transform_transpose(dv: jax.Array) -> jax.Array:
  """G^T dV G: [36, C_in, C_out] -> [3, 3, C_in, C_out]."""
  dv = dv.reshape(SPAN, SPAN, *dv.shape[1:])
  rows = _apply(G.T, [dv[a] for a in range(SPAN)], 0)  # [3, 6, C_in, C_out]
  return _apply(G.T, [rows[:, b] for b in range(SPAN)], 1)


def _batched_matmul(u: jax.Array, v: jax.Array, precision: Any) -> jax.Array:
  """[36, P, C_in] x [36, C_in, C_out] -> [36, P, C_out]."""
  return lax.dot_general(u, v, (((2,), (1,)), ((0,), (0,))), precision=precision)


def _forward(x, w, padding, precision):
  """The convolution and its transformed operands U [36, P, C_in] and V [36, C_in, C_out]."""
  n, h, wd, _ = x.shape
  grow_h, grow_w = _padded_growth(padding)
  h_out, w_out = h + grow_h, wd + grow_w
  u, v = input_transform(x, padding), kernel_transform(w)
  y = output_transform(_batched_matmul(u, v, precision), n, *tiles(h_out, w_out))
  return y[:, :h_out, :w_out], (u, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]],
            precision: Any = None) -> jax.Array:
  """The 3x3, stride-1 NHWC/HWIO convolution (cross-correlation, as ``lax``'s).

  Args:
    x: [N, H, W, C_in].
    w: [3, 3, C_in, C_out].
    padding: ((top, bottom), (left, right)), each in 0..2.
    precision: of the matmuls.

  Returns:
    [N, H + top + bottom - 2, W + left + right - 2, C_out], x's dtype.
  """
  return _forward(x, w, padding, precision)[0]


def _conv3x3_fwd(x, w, padding, precision):
  return _forward(x, w, padding, precision)  # U and V are the residuals


def _conv3x3_bwd(padding, precision, residuals, dy):
  u, v = residuals
  n, h_out, w_out, _ = dy.shape
  grow_h, grow_w = _padded_growth(padding)
  x_shape = (n, h_out - grow_h, w_out - grow_w, u.shape[-1])
  dm = output_transform_transpose(dy, *tiles(h_out, w_out))  # [36, P, C_out]
  du = lax.dot_general(dm, v, (((2,), (2,)), ((0,), (0,))), precision=precision)  # [36, P, C_in]
  dv = lax.dot_general(u, dm, (((1,), (1,)), ((0,), (0,))),
                       precision=precision)  # [36, C_in, C_out]
  return (input_transform_transpose(du, x_shape, padding).astype(dy.dtype),
          kernel_transform_transpose(dv).astype(v.dtype))


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
