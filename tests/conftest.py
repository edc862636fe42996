"""Shared test settings.

Eight simulated CPU devices (set before JAX starts) so that sharded steps run on a real mesh;
single-device code is unaffected. float32 matmuls and convs at full precision so that
comparisons are exact. A compilation cache shared by the session's tests: XLA's CPU compiles
dominate the suite's time and many tests compile the same tiny programs. ``few_images``: a
small COCO json dataset for the tests that train.
"""

import json
import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
_CACHE = os.path.join(tempfile.gettempdir(), 'dla_jax_test_compilation_cache')
# Subprocesses started by tests (the command line, several processes) share the cache too.
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from dla_jax.configs import shapes_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position
from dla_jax.data import shapes  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_default_matmul_precision', 'highest')


@pytest.fixture(name='few_images', scope='session')
def _few_images(tmp_path_factory):
  """A COCO json of 8 shapes training images that hold objects (images folder, json)."""
  root = tmp_path_factory.mktemp('shapes')
  images, annotations = shapes.ensure_dataset(str(root), (128, 128), 24, 2, seed=0)['train']
  with open(annotations) as f:
    data = json.load(f)
  with_objects = sorted({a['image_id'] for a in data['annotations']})[:8]
  data['images'] = [i for i in data['images'] if i['id'] in with_objects]
  data['annotations'] = [a for a in data['annotations'] if a['image_id'] in with_objects]
  subset = str(root / 'eight.json')
  with open(subset, 'w') as f:
    json.dump(data, f)
  return images, subset


@pytest.fixture(name='few_images_config', scope='session')
def _few_images_config(few_images):
  """``make(steps)``: shapes_tiny trained and evaluated on ``few_images``, one batch an epoch."""
  images, annotations = few_images

  def make(steps):
    config = shapes_tiny.get_config()
    config.data.source = 'coco_json'
    config.data.train_images = config.data.val_images = images
    config.data.train_annotations = config.data.val_annotations = annotations
    config.data.flip_prob = 0.0
    config.train.global_batch = config.train.eval_batch = 8
    config.optim.epochs = steps
    config.optim.decay_epochs = (int(steps * 0.8),)
    config.optim.warmup_steps = 20
    config.train.log_every = 25
    return config

  return make
