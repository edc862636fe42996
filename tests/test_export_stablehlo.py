"""The stablehlo export: the loader's detections equal the package's own, at any batch size,
without flax; damaged folders and bad images get one clear error."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from dla_jax import errors
from dla_jax import export_stablehlo
from dla_jax import predict
from dla_jax import serving
from dla_jax.configs import shapes_tiny
from dla_jax.models import detector

pytestmark = pytest.mark.slow  # every test here trains or compiles a detector, or starts processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = shapes_tiny.get_config()
  config.data.image_size = (64, 96)
  config.data.scale = (96, 64)
  config.data.num_classes = 3
  config.model.conv_impl = 'xla'
  config.inference.score_threshold = 0.0  # an untrained model's scores are low
  return config


@pytest.fixture(name='exported', scope='module')
def _exported(tmp_path_factory):
  """(config, weights, export folder, image files): a randomly initialised tiny detector."""
  config = _config()
  variables = detector.init_variables(config,
                                      jax.random.key(3))
  folder = tmp_path_factory.mktemp('stablehlo') / 'export'
  export_stablehlo.export(config, variables['params'], variables.get('batch_stats', {}),
                          ['circle', 'square', 'triangle'], str(folder), step=7)
  rng = np.random.default_rng(0)
  paths = []
  for i, (w, h) in enumerate([(120, 80), (80, 120), (100, 100), (60, 90), (150, 70)]):
    path = folder.parent / f'{i}.png'
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(path)
    paths.append(str(path))
  return config, variables, str(folder), paths


def test_export_holds_a_program_per_orientation_for_every_platform(exported):
  _, _, folder, _ = exported
  manifest = json.loads(open(os.path.join(folder, 'deploy.json')).read())
  assert manifest['programs'] == {'64x96': 'program_64x96.bin', '96x64': 'program_96x64.bin'}
  assert manifest['platforms'] == ['cpu', 'cuda', 'tpu']
  assert manifest['class_names'] == ['circle', 'square', 'triangle'] and manifest['step'] == 7
  for name in manifest['programs'].values():
    program = serving.load(folder).program(tuple(int(s) for s in name[8:-4].split('x')))
    assert program.platforms == ('cpu', 'cuda', 'tpu')


def test_loader_detections_equal_the_packages_own(exported):
  """The same XLA graph on both sides; compiled separately, so equal up to float32 rounding."""
  config, variables, folder, paths = exported
  ours = predict.detect_files(config, variables['params'], variables.get('batch_stats', {}),
                              paths)
  theirs = serving.load(folder).detect(paths)
  for (_, boxes, labels, scores), image in zip(ours, theirs):
    assert len(boxes) == len(image.boxes) > 0
    np.testing.assert_array_equal(image.classes, labels)
    np.testing.assert_allclose(image.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(image.boxes, boxes, rtol=1e-5, atol=1e-3)


def test_any_batch_size_runs_through_the_symbolic_dimension(exported):
  _, _, folder, paths = exported
  loaded = serving.load(folder)
  one_by_one = [loaded.detect([p])[0] for p in paths]
  for batch_size in (2, 3, 8):
    for alone, together in zip(one_by_one, loaded.detect(paths, batch_size=batch_size)):
      np.testing.assert_allclose(together.boxes, alone.boxes, rtol=1e-5, atol=1e-3)
      assert together.names == alone.names


def test_loader_runs_without_flax_optax_or_ml_collections(exported):
  _, _, folder, paths = exported
  code = ('import sys\n'
          'from dla_jax import serving\n'
          f'detections = serving.load({folder!r}).detect({paths!r})\n'
          'assert len(detections) == 5 and len(detections[0].boxes) > 0\n'
          'loaded = [m for m in ("flax", "optax", "ml_collections", "orbax", "dla_jax.models")\n'
          '          if m in sys.modules]\n'
          'assert not loaded, loaded\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('image, message', [
    (np.zeros((64, 64), np.uint8), r'image 0: expected an RGB array \[height, width, 3\], got '
                                   r'shape \(64, 64\)'),
    (np.zeros((64, 64, 4), np.uint8), r'image 0: expected an RGB array .* \(64, 64, 4\)'),
    (np.zeros((64, 64, 3), np.float32), 'image 0: expected uint8 pixels'),
])
def test_bad_images_are_named(exported, image, message):
  with pytest.raises(errors.DataError, match=message):
    serving.load(exported[2]).detect([image])


def _copy(folder, tmp_path):
  copy = tmp_path / 'copy'
  copy.mkdir()
  for name in os.listdir(folder):
    (copy / name).write_bytes(open(os.path.join(folder, name), 'rb').read())
  return copy


def test_an_export_from_a_newer_format_is_refused(exported, tmp_path):
  copy = _copy(exported[2], tmp_path)
  manifest = json.loads((copy / 'deploy.json').read_text())
  (copy / 'deploy.json').write_text(json.dumps({**manifest, 'version': serving.VERSION + 1}))
  with pytest.raises(errors.DataError, match='newer dla-jax'):
    serving.load(str(copy))


@pytest.mark.parametrize('name', ['program_64x96.bin', 'weights.npz'])
def test_a_truncated_file_is_named(exported, tmp_path, name):
  copy = _copy(exported[2], tmp_path)
  data = (copy / name).read_bytes()
  (copy / name).write_bytes(data[:len(data) // 2])
  with pytest.raises(errors.DataError, match=f'{name}: unreadable or truncated'):
    serving.load(str(copy)).detect([np.zeros((64, 96, 3), np.uint8)])


def test_an_existing_folder_is_not_overwritten(exported):
  config, variables, folder, _ = exported
  with pytest.raises(errors.FlagError, match='exists'):
    export_stablehlo.export(config, variables['params'], {}, ['a', 'b', 'c'], folder, step=1)
