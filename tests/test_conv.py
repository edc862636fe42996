"""The convolution with matmul kernel gradients computes XLA's convolution and its gradients,
for every stride, kernel size, padding and grouping the detector uses, and the whole detector's
gradients do not depend on which convolution backward is used."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import shapes_tiny
from dla_jax.models import conv
from dla_jax.models import detector


def _reference(x, w, strides, padding, groups):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO',
                                                                             'NHWC'),
                                  feature_group_count=groups)


@pytest.mark.parametrize('kernel, stride, padding, groups', [
    (3, 1, ((1, 1), (1, 1)), 1),
    (3, 2, ((1, 1), (1, 1)), 1),
    (1, 1, ((0, 0), (0, 0)), 1),
    (1, 2, ((0, 0), (0, 0)), 1),
    (7, 2, ((3, 3), (3, 3)), 1),
    (3, 1, ((0, 2), (1, 0)), 1),
    (3, 2, ((1, 1), (1, 1)), 4),
    (3, 1, 'SAME', 2),
])
def test_values_and_gradients_match_xla(kernel, stride, padding, groups):
  kx, kw, kg = jax.random.split(jax.random.key(kernel * 10 + stride + groups), 3)
  x = jax.random.normal(kx, (2, 13, 11, 8))
  w = jax.random.normal(kw, (kernel, kernel, 8 // groups, 12))
  mine = lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding,
                                                feature_group_count=groups, always_matmul=True)
  pads = (lax.padtype_to_pads((13, 11), (kernel, kernel), (stride, stride), padding)
          if isinstance(padding, str) else padding)
  ref = lambda x, w: _reference(x, w, (stride, stride), pads, groups)
  y, vjp = jax.vjp(mine, x, w)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  dy = jax.random.normal(kg, y.shape)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for got, want in zip(vjp(dy), vjp_ref(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bfloat16_kernel_gradient_is_bfloat16_and_close_to_float32():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  w = jax.random.normal(jax.random.key(1), (3, 3, 32, 32)) * 0.1
  grad = lambda x, w: jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), always_matmul=True).astype(jnp.float32) ** 2))(w)
  low = grad(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  high = grad(x, w)
  assert low.dtype == jnp.bfloat16
  assert np.linalg.norm(low.astype(np.float32) - high) / np.linalg.norm(high) < 2e-2


def test_detector_gradients_are_the_same_with_either_backward():
  config = shapes_tiny.get_config()
  images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  grads = {}
  for backward in ('matmul', 'xla'):
    config.model.conv_backward = backward
    model = detector.build_detector(config)
    variables = detector.init_variables(model, config, jax.random.key(1))
    loss = lambda p: sum(jnp.sum(jnp.sin(v)) for v in jax.tree.leaves(model.apply(
        {**variables, 'params': p}, images)))
    grads[backward] = jax.jit(jax.grad(loss))(variables['params'])
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads['matmul']),
                          jax.tree.leaves(grads['xla'])):
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b) + 1e-7, jax.tree_util.keystr(path)


def test_unsupported_convolutions_and_settings_are_named():
  x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
  with pytest.raises(ValueError, match='without dilation'):
    conv.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2))
  with pytest.raises(ValueError, match='only NHWC/HWIO'):
    conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
  with pytest.raises(ValueError, match="model.conv_backward: 'fast' is not one of"):
    conv.conv_function('fast')


def test_auto_uses_matmuls_only_for_wide_convolutions_over_many_positions():
  auto = conv.conv_function('auto')
  assert auto is conv.conv_general_dilated  # the tests run on CPU
  assert conv.conv_function('xla') is None

  def uses_matmul(x_shape, w_shape):
    grad = jax.grad(lambda w: jnp.sum(auto(jnp.ones(x_shape), w, (1, 1), 'SAME')))
    return 'dot_general' in str(jax.make_jaxpr(grad)(jnp.ones(w_shape)))  # the per-tap matmuls

  assert uses_matmul((2, 64, 64, 256), (3, 3, 256, 256))  # the head at P3 of 512 px images
  assert not uses_matmul((2, 64, 64, 64), (3, 3, 64, 64))  # too narrow
  assert not uses_matmul((2, 8, 8, 256), (3, 3, 256, 256))  # too few positions
