"""The jitted train step: sharded equals single-device, one compile per shape, NaN guard."""

import numpy as np

import jax
import jax.numpy as jnp
import pytest

from dla_jax.configs import shapes_tiny
from dla_jax import optim
from dla_jax import step as step_lib
from dla_jax.models import detector

STEPS_PER_EPOCH = 2


def _config():
  config = shapes_tiny.get_config()
  config.data.image_size = (64, 64)
  config.data.max_boxes = 6
  config.train.global_batch = 8
  config.optim.warmup_steps = 0
  # The paper's SGD: its update is linear in the gradient, so float32 reduction-order noise
  # stays at 1e-7 (AdamW's m / sqrt(v) turns it into O(lr) differences on near-zero gradients).
  config.optim.name = 'sgd'
  return config


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, g = config.train.global_batch, config.data.max_boxes
  h, w = config.data.image_size
  xy = rng.uniform(0, 40, (b, g, 2))
  wh = rng.uniform(8, 24, (b, g, 2))
  return {
      'images': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
      'image_hw': np.tile(np.array([h, w], np.int32), (b, 1)),
      'boxes': np.concatenate([xy, xy + wh], -1).astype(np.float32),
      'labels': rng.integers(0, config.data.num_classes, (b, g)).astype(np.int32),
      'valid': rng.uniform(size=(b, g)) < 0.6,
  }


def _setup(config, devices):
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  tx = optim.make_optimizer(config, model.trainable(variables['params']), STEPS_PER_EPOCH)
  mesh = step_lib.make_mesh(devices)
  state = jax.device_put(step_lib.create_train_state(variables, tx),
                         step_lib.replicated(mesh))
  train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, config=config,
                                       steps_per_epoch=STEPS_PER_EPOCH)
  return mesh, state, train_step


@pytest.mark.slow
def test_sharded_step_on_8_devices_equals_single_device_step():
  assert jax.device_count() >= 8, 'conftest sets 8 simulated CPU devices'
  config = _config()
  batch = _batch(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh, state, train_step = _setup(config, devices)
    state, metrics = train_step(state, jax.device_put(batch, step_lib.batch_sharding(mesh)))
    assert len(state.step.sharding.device_set) == len(devices)
    results.append(jax.device_get((state.params, metrics)))
  (params1, metrics1), (params8, metrics8) = results
  assert metrics1['num_pos'] > 0
  np.testing.assert_allclose(metrics8['loss'], metrics1['loss'], rtol=1e-5)
  np.testing.assert_allclose(metrics8['num_pos'], metrics1['num_pos'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               params8, params1)


@pytest.mark.slow
def test_train_step_compiles_once_while_alpha_and_lr_change():
  config = _config()
  mesh, state, train_step = _setup(config, jax.devices()[:2])
  alphas, lrs = [], []
  for i in range(6):
    batch = jax.device_put(_batch(config, seed=i), step_lib.batch_sharding(mesh))
    state, metrics = train_step(state, batch)
    alphas.append(float(metrics['alpha']))
    lrs.append(float(metrics['lr']))
  assert len(set(alphas)) == 3  # alpha moves at each epoch boundary (2 steps an epoch)
  assert train_step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 6


@pytest.mark.slow
def test_non_finite_loss_skips_the_update_and_records_the_step():
  config = _config()
  mesh, state, train_step = _setup(config, jax.devices()[:1])
  sharding = step_lib.batch_sharding(mesh)
  state, _ = train_step(state, jax.device_put(_batch(config), sharding))
  # A non-finite weight (as after a divergence) makes the loss non-finite.
  head = dict(state.params['head'])
  head['cls_logits'] = {**head['cls_logits'], 'bias': head['cls_logits']['bias'] * jnp.nan}
  state = state.replace(params={**state.params, 'head': head})
  before = jax.device_get(state.params)
  state, metrics = train_step(state, jax.device_put(_batch(config, seed=1), sharding))
  assert not np.isfinite(float(metrics['loss']))
  assert int(state.nonfinite_step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
  state, _ = train_step(state, jax.device_put(_batch(config, seed=2), sharding))
  assert int(state.nonfinite_step) == 1  # the first bad step is kept
