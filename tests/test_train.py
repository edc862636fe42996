"""Training end to end: a tiny model overfits a few shapes images; the CLI trains, evaluates and
predicts with DLA and with the ATSS baseline; bad settings fail early and clearly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import shapes_tiny
from dla_jax import metric_writer
from dla_jax import train
from dla_jax.data import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name='few_images', scope='module')
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


def _config_on(images, annotations, steps):
  """shapes_tiny on one fixed set of images, trained and evaluated on the same images."""
  config = shapes_tiny.get_config()
  config.data.source = 'coco_json'
  config.data.train_images = config.data.val_images = images
  config.data.train_annotations = config.data.val_annotations = annotations
  config.data.flip_prob = 0.0
  config.train.global_batch = config.train.eval_batch = 8
  config.optim.epochs = steps  # one batch an epoch
  config.optim.decay_epochs = (int(steps * 0.8),)
  config.optim.warmup_steps = 20
  config.train.log_every = 25
  return config


def test_tiny_model_overfits_a_handful_of_images(few_images, tmp_path):
  config = _config_on(*few_images, steps=200)
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics['AP'] >= 0.8, metrics
  logged = metric_writer.read_metrics(str(tmp_path), 'train')
  assert logged[-1]['loss'] < 0.5 * logged[0]['loss']
  assert [r['step'] for r in logged] == list(range(25, 201, 25))
  assert os.path.exists(tmp_path / 'detections_val_step200.json')


def _run(*args):
  result = subprocess.run([sys.executable, '-m', 'dla_jax.main', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.parametrize('assigner', ['atss', 'dla'])
def test_main_trains_evaluates_and_predicts(few_images, tmp_path, assigner):
  images, annotations = few_images
  overrides = [f'--config.assigner.name={assigner}', '--config.data.source=coco_json',
               f'--config.data.train_images={images}', f'--config.data.val_images={images}',
               f'--config.data.train_annotations={annotations}',
               f'--config.data.val_annotations={annotations}',
               '--config.train.global_batch=8', '--config.train.eval_batch=8',
               '--config.optim.epochs=3', '--config.train.log_every=1']
  workdir = str(tmp_path / 'run')
  out = _run('--config', 'configs/shapes_tiny.py', '--workdir', workdir, *overrides)
  assert 'step 3/3' in out and 'alpha' in out and 'img/s' in out
  assert 'val at step 3: AP ' in out
  alpha = [r['alpha'] for r in metric_writer.read_metrics(workdir, 'train')]
  # Eq. 2 with T = 3 epochs of one step each; ATSS is alpha = 1 throughout.
  expected = [1.0] * 3 if assigner == 'atss' else [0.9 + 0.1 * np.exp(-t / 3**0.5)
                                                   for t in range(3)]
  np.testing.assert_allclose(alpha, expected, rtol=1e-6)
  drawn = tmp_path / 'drawn'
  out = _run('--mode', 'predict', '--config', 'configs/shapes_tiny.py', '--workdir', workdir,
             '--images', os.path.join(images, '00000[01].png'), '--out', str(drawn), *overrides)
  assert sorted(os.listdir(drawn)) == ['000000.png', '000001.png']


@pytest.mark.parametrize('field, value, message', [
    ('train.global_batch', 6, r'train.global_batch: 6 is not a positive multiple of the 8'),
    ('assigner.name', 'simota', r"assigner.name: 'simota' is not one of"),
    ('data.image_size', (100, 128), r'data.image_size: \(100, 128\) must be multiples of 32'),
])
def test_bad_config_values_are_named(field, value, message):
  config = shapes_tiny.get_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    train.check_config(config, num_devices=8)
