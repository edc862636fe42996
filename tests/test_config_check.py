"""Every bad config value is refused before anything is built, naming the field and what it
allows; every packaged config passes; a run checks its config once."""

import importlib

import pytest

from dla_jax import cli
from dla_jax import config_check
from dla_jax import errors
from dla_jax import evaluation
from dla_jax import train
from dla_jax.configs import shapes_tiny
from dla_jax.data import pipeline


@pytest.mark.parametrize('name', [n for n in cli.packaged_configs() if n != 'default'])
def test_every_packaged_config_passes_on_8_devices(name):
  config = importlib.import_module(f'dla_jax.configs.{name}').get_config()
  config_check.check(config, num_devices=8, training=False)
  if config.model.backbone_norm != 'group_norm':  # a COCO config: trains from ImageNet weights
    config.model.backbone_init = '/weights/r50'
  config_check.check(config, num_devices=8)


@pytest.mark.parametrize('name', sorted(config_check.CHOICES))
def test_each_choice_field_names_its_allowed_values(name):
  config = shapes_tiny.get_config()
  section, field = name.split('.')
  config[section][field] = 'nonsense'
  allowed = config_check.CHOICES[name]
  with pytest.raises(errors.ConfigError) as raised:
    config_check.check(config, num_devices=1)
  assert str(raised.value) == f"{name}: 'nonsense' is not one of {allowed}"


@pytest.mark.parametrize('field, value, message', [
    ('train.global_batch', 6, r'^train.global_batch: 6 is not a positive multiple of the 8'),
    ('train.eval_batch', 0, r'^train.eval_batch: 0 is not a positive multiple of the 8'),
    ('train.stop_at_step', -1, r'^train.stop_at_step: -1 is negative'),
    ('data.image_size', (100, 128), r'^data.image_size: \(100, 128\) must be multiples of 32'),
    ('data.scale', (512, 128), r'^data.scale \(512, 128\) and data.short_side_range'),
    ('data.num_workers', -2, r'^data.num_workers: -2 is not -1'),
    ('data.max_image_pixels', -1, r"^data.max_image_pixels: -1 is not 0 \(Pillow's limit\)"),
    ('data.num_threads', -1, r'^data.num_threads: -1 is negative'),
    ('data.num_classes', 0, r'^data.num_classes: must be at least 1'),
    ('model.gn_groups', 24, r'^model.gn_groups: 24 does not divide'),
    ('model.head_channels', 0, r'^model.head_channels: must be positive'),
    ('model.prior_prob', 1.0, r'^model.prior_prob: 1.0 is not in \(0, 1\)'),
    ('assigner.topk', 0, r'^assigner.topk: must be at least 1'),
    ('optim.epochs', 0, r'^optim.epochs: must be at least 1'),
    ('optim.base_lr', 0.0, r'^optim.base_lr: must be positive'),
    ('optim.weight_decay', -1e-4, r'^optim.weight_decay: must not be negative'),
])
def test_bad_values_are_named(field, value, message):
  config = shapes_tiny.get_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_check.check(config, num_devices=8)


def test_a_batch_that_fits_the_devices_but_not_the_processes_is_named():
  config = shapes_tiny.get_config()
  config.train.global_batch = 8
  with pytest.raises(errors.ConfigError, match=r'^train.global_batch: 8 does not split over 3'):
    config_check.check(config, num_devices=8, num_processes=3)



class _Stop(Exception):
  """Raised where a run starts reading its data, after its config check."""


def _stop(*args, **kwargs):
  raise _Stop


@pytest.fixture(name='checks')
def _checks(monkeypatch):
  """The calls of ``config_check.check``, counted; each still checks."""
  calls = []
  check = config_check.check

  def counted(*args, **kwargs):
    calls.append(args)
    check(*args, **kwargs)

  monkeypatch.setattr(config_check, 'check', counted)
  return calls


@pytest.mark.parametrize('run', [train.train, train.train_and_evaluate])
def test_a_training_run_checks_its_config_once(run, checks, monkeypatch, tmp_path):
  monkeypatch.setattr(pipeline, 'make_train_iterator', _stop)
  with pytest.raises(_Stop):
    run(shapes_tiny.get_config(), str(tmp_path))
  assert len(checks) == 1


def test_an_evaluation_checks_its_config_once(checks, monkeypatch, tmp_path):
  monkeypatch.setattr(pipeline, 'make_eval_iterator', _stop)
  with pytest.raises(_Stop):
    evaluation.evaluate(shapes_tiny.get_config(), str(tmp_path), params={}, batch_stats={},
                        step=0)
  assert len(checks) == 1
