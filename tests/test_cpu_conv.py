"""Every convolution implementation computes XLA's convolution and its gradients, for every
stride, kernel size, padding and grouping the detector uses; 'auto' picks each where it pays;
and the whole detector's gradients do not depend on the implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dla_jax.configs import shapes_tiny
from dla_jax import cpu
from dla_jax.cpu import conv
from dla_jax.cpu import fusion_barrier
from dla_jax.models import detector


def _reference(x, w, strides, padding, groups):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO',
                                                                             'NHWC'),
                                  feature_group_count=groups)


@pytest.mark.parametrize('impl', ['matmul', 'winograd'])
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
@pytest.mark.slow
def test_values_and_gradients_match_xla(kernel, stride, padding, groups, impl):
  kx, kw, kg = jax.random.split(jax.random.key(kernel * 10 + stride + groups), 3)
  x = jax.random.normal(kx, (2, 13, 11, 8))
  w = jax.random.normal(kw, (kernel, kernel, 8 // groups, 12))
  mine = lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding,
                                                feature_group_count=groups, impl=impl)
  pads = (lax.padtype_to_pads((13, 11), (kernel, kernel), (stride, stride), padding)
          if isinstance(padding, str) else padding)
  ref = lambda x, w: _reference(x, w, (stride, stride), pads, groups)
  y, vjp = jax.vjp(mine, x, w)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  dy = jax.random.normal(kg, y.shape)
  if impl == 'matmul':  # XLA's own forward and input gradient, matmul kernel gradient
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(vjp(dy), vjp_ref(dy)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  else:  # Winograd for 3x3 stride 1: float32 error relative to the whole (test_winograd.py)
    for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
      assert np.linalg.norm(got - want) <= 2e-5 * np.linalg.norm(want)


@pytest.mark.slow
def test_bfloat16_kernel_gradient_is_bfloat16_and_close_to_float32():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  w = jax.random.normal(jax.random.key(1), (3, 3, 32, 32)) * 0.1
  grad = lambda x, w: jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), impl='matmul').astype(jnp.float32) ** 2))(w)
  low = grad(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  high = grad(x, w)
  assert low.dtype == jnp.bfloat16
  assert np.linalg.norm(low.astype(np.float32) - high) / np.linalg.norm(high) < 2e-2


@pytest.mark.slow
def test_detector_gradients_match_float64_with_every_implementation(monkeypatch):
  """Winograd and XLA in float32 against XLA's float64 gradient of a random projection of the
  outputs. Against float64, not against XLA's float32: for some inputs (the images of
  ``jax.random.key(0)``) XLA's own float32 gradient is 3.5% off the float64 one at the first
  ResNet stage, while Winograd's is within 3e-5."""
  monkeypatch.setitem(detector.DTYPES, 'float64', jnp.float64)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, size=(2, 64, 64, 3))  # pixels, as the detector takes them
  config = shapes_tiny.get_config()
  config.model.conv_impl = 'xla'  # the initial weights do not depend on it: drawn once
  initial = detector.init_variables(config, jax.random.key(1))

  def gradients(impl, dtype):
    config.model.conv_impl, config.model.dtype = impl, dtype
    model = detector.build_detector(config)
    variables = jax.tree.map(lambda v: v.astype(dtype), initial)

    def loss(params):
      outputs = jax.tree.leaves(model.apply({**variables, 'params': params},
                                            images.astype(dtype)))
      return sum(jnp.vdot(np.random.default_rng(i).normal(size=v.shape).astype(dtype), v)
                 for i, v in enumerate(outputs))

    return jax.jit(jax.grad(loss))(variables['params'])

  with jax.enable_x64(True):
    truth = jax.tree.map(np.asarray, gradients('xla', 'float64'))
  for impl in ('winograd', 'xla'):  # 'matmul' changes kernel gradients only, checked above
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(gradients(impl, 'float32')),
                                 jax.tree.leaves(truth)):
      # float32 rounding through ~20 layers; a wrongly wired convolution is off by order 1
      assert np.linalg.norm(np.asarray(got, np.float64) - want) <= 1e-4 * np.linalg.norm(want), (
          impl, jax.tree_util.keystr(path))


def test_unsupported_convolutions_and_settings_are_named():
  x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
  with pytest.raises(ValueError, match='without dilation'):
    conv.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2))
  with pytest.raises(ValueError, match='only NHWC/HWIO'):
    conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))


def _auto(x_shape, w_shape, stride=1, dtype=jnp.float32):
  pad = (w_shape[0] - 1) // 2
  return conv.implementation('auto', x_shape, w_shape, (stride, stride), ((pad, pad),) * 2, 1,
                             dtype)


def test_auto_picks_each_implementation_where_it_pays():
  assert _auto((2, 128, 128, 256), (1, 1, 256, 64)) == 'pointwise'
  assert _auto((2, 128, 128, 256), (1, 1, 256, 512), stride=2) == 'pointwise'
  assert _auto((2, 64, 64, 256), (3, 3, 256, 256)) == 'winograd'  # the head at P3 of 512 px
  assert _auto((16, 32, 32, 32), (3, 3, 32, 32)) == 'winograd'  # narrow, but many tiles
  assert _auto((2, 64, 64, 8), (3, 3, 8, 8)) == 'xla'  # too little work
  assert _auto((2, 16, 16, 256), (3, 3, 256, 256)) == 'xla'  # too few tiles for its kernel
  assert _auto((2, 64, 64, 256), (3, 3, 256, 256), dtype=jnp.bfloat16) == 'matmul'
  assert _auto((2, 64, 64, 256), (3, 3, 256, 256), stride=2) == 'matmul'
  assert _auto((2, 64, 64, 64), (3, 3, 64, 64), stride=2) == 'xla'  # too narrow
  assert _auto((2, 512, 512, 3), (7, 7, 3, 64), stride=2) == 'xla'  # the stem


def test_cpu_options_follow_conv_impl_and_other_backends_get_the_plain_graph():
  config = shapes_tiny.get_config()
  options = cpu.model_options(config.model, 'cpu')
  assert options.conv.func is conv.conv_general_dilated and options.conv.keywords == {
      'impl': 'auto'}
  assert options.block_output is fusion_barrier.block_output
  for backend in ('gpu', 'tpu'):
    assert cpu.model_options(config.model, backend) == cpu.ModelOptions()
  config.model.conv_impl = 'xla'
  assert cpu.model_options(config.model, 'cpu') == cpu.ModelOptions()
