"""Shared test settings and fixtures.

Eight simulated CPU devices (set before JAX starts) so that sharded steps run on a real mesh;
single-device code is unaffected. float32 matmuls and convs at full precision so that
comparisons are exact. Both settings, and one persistent compilation cache, reach the command
lines and processes that tests start, so that a program compiled once, in any of them, is
loaded by the others: XLA's CPU compiles are most of the suite's time.

The short trainings share one schedule and config (``SHORT_RUN``), each stopping where it needs
with ``train.stop_at_step``: a train step compiles its schedule in, so trainings that share the
schedule share one program. ``trained_run`` is one finished short run that every test needing a
checkpoint reads (and copies before changing).

The suite runs in as many pytest-xdist workers as the machine has cores (``-n auto``): the
session fixtures that write files (``few_images``, ``trained_run``, and a test module's own
through ``made_once``) are made once, by whichever worker needs them first, in a folder all
workers share.
"""

import contextlib
import functools
import json
import os
import pathlib
import tempfile

# LLVM's optimisation off: the suite's time is mostly XLA:CPU compiling short-lived programs,
# which compile a third faster at level 0 and run about 1.6 times slower
# (docs/performance.md#the-test-suite).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0')
os.environ['JAX_DEFAULT_MATMUL_PRECISION'] = 'highest'
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(tempfile.gettempdir(),
                                                       'dla_jax_test_compilation_cache')
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

import filelock  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from dla_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from dla_jax.configs import shapes_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position
from dla_jax.data import shapes  # pylint: disable=g-import-not-at-top,wrong-import-position

# shapes_tiny on ``few_images``: 8 images, one batch an epoch, 12 epochs. XLA's own convolutions:
# the CPU convolutions (dla_jax/cpu) have their own tests and the main command's.
SHORT_RUN = {'optim.epochs': 12, 'optim.decay_epochs': (10,), 'optim.warmup_steps': 20,
             'train.global_batch': 8, 'train.eval_batch': 8, 'train.log_every': 1,
             'data.flip_prob': 0.0, 'model.conv_impl': 'xla'}


@contextlib.contextmanager
def _made_once(tmp_path_factory, name: str):
  """``(folder, made)`` for a session fixture's files: ``folder`` is shared by the run's xdist
  workers; ``made`` is False for the one that is to write them (the others wait until it has)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the run's folder, above each worker's own
  folder, done = pathlib.Path(root) / name, pathlib.Path(root) / f'{name}.done'
  with filelock.FileLock(str(root / f'{name}.lock')):
    yield folder, done.exists()
    done.touch()


@pytest.fixture(name='made_once', scope='session')
def _made_once_fixture(tmp_path_factory):
  """``made_once(name)``: ``_made_once`` for a test module's own session fixture."""
  return functools.partial(_made_once, tmp_path_factory)


@pytest.fixture(name='short_run', scope='session')
def _short_run():
  """``SHORT_RUN``'s config overrides (flattened field names)."""
  return dict(SHORT_RUN)


@pytest.fixture(name='few_images', scope='session')
def _few_images(tmp_path_factory):
  """A COCO json of 8 shapes training images that hold objects (images folder, json)."""
  with _made_once(tmp_path_factory, 'shapes') as (root, made):
    subset = str(root / 'eight.json')
    images, annotations = shapes.ensure_dataset(str(root), (128, 128), 24, 2, seed=0)['train']
    if not made:
      with open(annotations) as f:
        data = json.load(f)
      with_objects = sorted({a['image_id'] for a in data['annotations']})[:8]
      data['images'] = [i for i in data['images'] if i['id'] in with_objects]
      data['annotations'] = [a for a in data['annotations'] if a['image_id'] in with_objects]
      with open(subset, 'w') as f:
        json.dump(data, f)
  return images, subset


def _short_run_fields(few_images, stop_at_step: int) -> dict:
  images, annotations = few_images
  return {'data.source': 'coco_json', 'data.train_images': images, 'data.val_images': images,
          'data.train_annotations': annotations, 'data.val_annotations': annotations,
          **SHORT_RUN, 'train.stop_at_step': stop_at_step}


@pytest.fixture(name='few_images_config', scope='session')
def _few_images_config(few_images):
  """``make(stop_at_step=0)``: the ``SHORT_RUN`` config, trained and evaluated on ``few_images``."""

  def make(stop_at_step: int = 0):
    config = shapes_tiny.get_config()
    config.update_from_flattened_dict(_short_run_fields(few_images, stop_at_step))
    return config

  return make


@pytest.fixture(name='few_images_flags', scope='session')
def _few_images_flags(few_images):
  """``make(stop_at_step=0)``: the ``SHORT_RUN`` config as ``--config.*`` flags of
  ``configs/shapes_tiny.py``, for the command lines."""

  def make(stop_at_step: int = 0):
    return [f'--config.{k}={v}' for k, v in _short_run_fields(few_images, stop_at_step).items()]

  return make


@pytest.fixture(name='trained_run', scope='session')
def _trained_run(few_images_config, tmp_path_factory):
  """(config, workdir, val metrics) of a finished ``SHORT_RUN`` that kept its last three
  checkpoints (10, 11, 12) and wrote classes.json. Read it; copy it to change it."""
  config = few_images_config()
  config.train.checkpoint_every = 1
  with _made_once(tmp_path_factory, 'trained_run') as (workdir, made):
    if not made:
      train.train_and_evaluate(config, str(workdir))
  with open(workdir / train.FINAL_METRICS) as f:
    metrics = {k: v for k, v in json.load(f).items() if k not in ('step', 'split')}
  return config, str(workdir), metrics


def pytest_collection_modifyitems(items):
  """The slow tests first, so that the xdist workers start the long ones early and the quick ones
  fill in at the end."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
