"""The command lines' shared behaviour: ``--config`` takes a file or a packaged config's name from
any folder; an unknown override is named with the nearest field; a user's mistake ends with one
line on stderr, exit status 2 and no traceback, leaving no checkpoint behind; every run prints
its start-up line."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from dla_jax import cli
from dla_jax import errors
from dla_jax.configs import shapes_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_resolves_files_and_packaged_names_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  packaged = cli.config_path('shapes_tiny')
  assert packaged.endswith(os.path.join('configs', 'shapes_tiny.py'))
  assert cli.config_path('shapes_tiny.py') == cli.config_path('configs/shapes_tiny.py') == packaged
  assert cli.config_path('shapes_tiny:small') == packaged + ':small'
  (tmp_path / 'mine.py').write_text('from dla_jax.configs import shapes_tiny\n'
                                    'get_config = shapes_tiny.get_config\n')
  assert cli.config_path('mine.py') == str(tmp_path / 'mine.py')
  with pytest.raises(errors.ConfigError, match=r'nope\.py: no such config file, and not a '
                     r'packaged config \(one of .*shapes_tiny'):
    cli.config_path('nope.py')
  with pytest.raises(errors.ConfigError):  # a packaged name under another folder is a path
    cli.config_path('elsewhere/shapes_tiny.py')


@pytest.mark.parametrize('field, nearest', [
    ('optim.lr', 'optim.base_lr'), ('optim.epoch', 'optim.epochs'),
    ('opt.epochs', 'optim.epochs'), ('model.backbon', 'model.backbone'),
    ('train.zzzzzz', None)])
def test_unknown_override_names_the_nearest_field(field, nearest):
  config = shapes_tiny.get_config()
  assert cli.nearest_field(field, cli.field_paths(config)) == nearest
  hint = f'; did you mean --config.{nearest}?' if nearest else ''
  with pytest.raises(errors.ConfigError) as raised:
    cli.check_overrides(config, 'config', ['prog', f'--config.{field}=1'])
  assert str(raised.value) == f'--config.{field}: the config has no field {field!r}{hint}'
  cli.check_overrides(config, 'config', ['prog', '--config.optim.base_lr=1',
                                         '--config.data.image_size[0]=64',
                                         '--noconfig.train.require_accelerator'])


def _main(*args, cwd):
  return subprocess.run([sys.executable, '-m', 'dla_jax.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _bad_json(folder):
  path = folder / 'instances.json'
  path.write_text(json.dumps({'images': [], 'annotations': [], 'categories': []}))
  return str(path)


@pytest.mark.parametrize('args, message', [
    (['--config.optim.lr=0.1'], "--config.optim.lr: the config has no field 'optim.lr'; "
                                'did you mean --config.optim.base_lr?'),
    (['--config.model.dtype=float16'], "model.dtype: 'float16' is not one of"),
    (['--mode', 'fly'], 'flag --mode=fly: value should be one of'),
    (['--config.data.source=coco_json', '--config.data.root=/nowhere'],
     "data.train_images: no folder /nowhere/coco/train2017 (data.train_images 'coco/train2017' "
     "under data.root '/nowhere'); set --config.data.root or --config.data.train_images"),
    (['--config.data.source=coco_json', '--config.data.root=TMP',
      '--config.data.train_images=.', '--config.data.train_annotations=BAD'], 'instances.json: '),
])
@pytest.mark.slow
def test_a_users_mistake_ends_with_one_line_and_no_checkpoint(tmp_path, args, message):
  args = [a.replace('BAD', _bad_json(tmp_path)).replace('TMP', str(tmp_path)) for a in args]
  workdir = tmp_path / 'run'
  result = _main('--config', 'shapes_tiny', '--workdir', str(workdir), *args, cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if not l.startswith(('W', 'I')) or
           l.startswith('dla_jax.main')]
  assert len(lines) == 1 and lines[0].startswith('dla_jax.main: error: '), result.stderr
  assert message in lines[0], lines[0]
  assert 'Traceback' not in result.stderr
  checkpoints = workdir / 'checkpoints'
  assert not checkpoints.exists() or not any(checkpoints.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize('bad, message', [
    ('corrupt', r'5\.png: cannot read image 6: '),
    ('too_large', r'\d\.png: cannot read image \d: .*decompression bomb.*; for real images this '
                  r'large, raise data\.max_image_pixels$')])
def test_a_bad_image_met_in_training_ends_with_one_line_naming_it(tmp_path, bad, message):
  """A corrupt file, or an image past the pixel limit (every image here is past twice
  ``data.max_image_pixels=1000``)."""
  rng = np.random.default_rng(0)
  images = []
  for i in range(8):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(tmp_path / f'{i}.png')
    images.append({'id': i + 1, 'file_name': f'{i}.png', 'height': 64, 'width': 64})
  limit = []
  if bad == 'corrupt':
    (tmp_path / '5.png').write_bytes(b'not a png')
  else:
    limit = ['--config.data.max_image_pixels=1000']
  (tmp_path / 'instances.json').write_text(json.dumps({
      'images': images, 'categories': [{'id': 1, 'name': 'thing'}],
      'annotations': [{'id': i + 1, 'image_id': i + 1, 'category_id': 1,
                       'bbox': [8, 8, 20, 20]} for i in range(8)]}))
  workdir = tmp_path / 'run'
  result = _main('--config', 'shapes_tiny', '--workdir', str(workdir),
                 '--config.data.source=coco_json', f'--config.data.train_images={tmp_path}',
                 f'--config.data.train_annotations={tmp_path / "instances.json"}',
                 '--config.data.num_classes=1', '--config.train.global_batch=8', *limit,
                 '--mode', 'train', cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert re.match(rf'dla_jax\.main: error: {re.escape(str(tmp_path))}/{message}', last), last
  assert 'Traceback' not in result.stderr
  assert not any((workdir / 'checkpoints').iterdir())


def test_a_bug_keeps_its_traceback(tmp_path):
  program = ('from dla_jax import cli\n'
             'def main(argv):\n'
             '  raise RuntimeError("a bug")\n'
             'cli.run(main)\n')
  result = subprocess.run([sys.executable, '-c', program], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1
  assert 'Traceback' in result.stderr and 'RuntimeError: a bug' in result.stderr


def test_summary_runs_from_another_folder(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'dla_jax.tools.summary', '--config',
                           'shapes_tiny', '--config.data.image_size=(96, 160)'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert re.search(r'^P3 \(stride 8\) +12 x 20 = 240 priors$', result.stdout, flags=re.M)
