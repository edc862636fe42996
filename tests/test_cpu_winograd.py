"""Winograd F(4x4, 3x3) computes the 3x3 stride-1 convolution and both its gradients to float32
accuracy, for every padding it takes and for outputs that do not fill whole tiles."""

import jax
import numpy as np
import pytest
from jax import lax

from dla_jax.cpu import winograd


def _reference(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO',
                                                                            'NHWC'),
                                  precision=lax.Precision.HIGHEST)


def _relative_error(got, want):
  return float(np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want))


@pytest.mark.parametrize('shape, padding', [
    ((2, 16, 16, 8, 12), ((1, 1), (1, 1))),  # whole tiles
    ((1, 13, 11, 5, 7), ((1, 1), (1, 1))),  # partial tiles
    ((2, 9, 10, 4, 4), ((0, 0), (0, 0))),  # 'VALID'
    ((1, 7, 12, 6, 3), ((0, 2), (2, 1))),  # asymmetric
    ((1, 4, 4, 16, 16), ((2, 2), (2, 2))),  # one tile and a full border
])
@pytest.mark.slow
def test_values_and_gradients_match_a_direct_convolution(shape, padding):
  n, h, w_, cin, cout = shape
  kx, kw, kg = jax.random.split(jax.random.key(h * w_ + cin), 3)
  x = jax.random.normal(kx, (n, h, w_, cin))
  w = jax.random.normal(kw, (3, 3, cin, cout))
  dy = jax.random.normal(kg, (n, h + sum(padding[0]) - 2, w_ + sum(padding[1]) - 2, cout))

  @jax.jit
  def value_and_gradients(x, w, dy):
    y, vjp = jax.vjp(lambda x, w: winograd.conv3x3(x, w, padding), x, w)
    return (y, *vjp(dy))

  y_ref, vjp_ref = jax.vjp(lambda x, w: _reference(x, w, padding), x, w)
  for got, want in zip(value_and_gradients(x, w, dy), (y_ref, *vjp_ref(dy))):
    assert got.shape == want.shape
    assert _relative_error(got, want) < 2e-5


@pytest.mark.slow
def test_transforms_are_each_others_transposes():
  """<output_transform(m), dy> = <m, output_transform_transpose(dy)> and likewise for the
  input and kernel transforms: the gradients rest on these identities."""
  km, kd, kv, kw = jax.random.split(jax.random.key(0), 4)
  n, th, tw, c = 2, 3, 2, 5
  m = jax.random.normal(km, (36, n * th * tw, c))
  dy = jax.random.normal(kd, (n, 4 * th, 4 * tw, c))
  np.testing.assert_allclose(
      np.vdot(winograd.output_transform(m, n, th, tw), dy),
      np.vdot(m, winograd.output_transform_transpose(dy, th, tw)), rtol=1e-5)
  for x_shape, padding in (((2, 12, 8, 5), ((1, 1), (1, 1))), ((1, 7, 10, 5), ((0, 2), (2, 0)))):
    x = jax.random.normal(km, x_shape)
    u = winograd.input_transform(x, padding)
    du = jax.random.normal(kd, u.shape)
    np.testing.assert_allclose(np.vdot(u, du),
                               np.vdot(x, winograd.input_transform_transpose(du, x.shape,
                                                                             padding)),
                               rtol=1e-5)
  w = jax.random.normal(kw, (3, 3, 4, 6))
  dv = jax.random.normal(kv, (36, 4, 6))
  np.testing.assert_allclose(np.vdot(winograd.kernel_transform(w), dv),
                             np.vdot(w, winograd.kernel_transform_transpose(dv)), rtol=1e-5)


def test_input_transform_tiles_cover_the_output():
  assert winograd.tiles(64, 64) == (16, 16)
  assert winograd.tiles(13, 1) == (4, 1)
  u = winograd.input_transform(jax.numpy.ones((2, 13, 11, 3)), ((1, 1), (1, 1)))
  assert u.shape == (36, 2 * 4 * 3, 3)
