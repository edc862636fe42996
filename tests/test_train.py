"""Training end to end: a tiny model overfits a few shapes images, and trains through the graph
GPUs and TPUs run; the CLI trains, evaluates, predicts and exports with DLA and with the ATSS
baseline; SIGTERM checkpoints and SIGKILL loses nothing; each step compiles once per shape."""

import collections
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dla_jax.configs import shapes_tiny
from dla_jax import checkpoint
from dla_jax import metric_writer
from dla_jax import train
from dla_jax.models import detector

pytestmark = pytest.mark.slow  # every test here trains or compiles a detector, or starts processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_model_overfits_a_handful_of_images(few_images_config, tmp_path):
  """The main command's model and CPU convolutions (conv_impl 'auto'), on a 120-step schedule."""
  config = few_images_config()
  config.model.conv_impl = 'auto'
  config.optim.epochs, config.optim.decay_epochs = 120, (100,)
  config.train.log_every = 20
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics['AP'] >= 0.8, metrics
  logged = metric_writer.read_metrics(str(tmp_path), 'train')
  assert logged[-1]['loss'] < 0.5 * logged[0]['loss']
  assert [r['step'] for r in logged] == list(range(20, 121, 20))
  assert os.path.exists(tmp_path / 'detections_val_step120.json')
  with open(tmp_path / train.FINAL_METRICS) as f:
    assert json.load(f) == {'step': 120, 'split': 'val', **metrics}


def test_training_through_the_graph_gpus_and_tpus_run(few_images_config, trained_run):
  """With conv_impl='xla' the CPU builds exactly the detector GPU and TPU get (XLA's own
  convolutions, no fusion barriers), and it trains: the suite's short runs use it."""
  config = few_images_config()
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8)

  def program(model):
    return jax.jit(model.apply).lower(detector.abstract_variables(model), images).as_text()

  accelerators = program(detector.build_detector(config, backend='gpu'))
  assert config.model.conv_impl == 'xla'
  assert program(detector.build_detector(config)) == accelerators
  config.model.conv_impl = 'auto'
  assert program(detector.build_detector(config)) != accelerators
  _, workdir, _ = trained_run
  logged = metric_writer.read_metrics(workdir, 'train')
  assert [r['step'] for r in logged] == list(range(1, 13))
  assert logged[-1]['loss'] < 0.7 * logged[0]['loss']


def _run(*args, cwd=REPO):
  result = subprocess.run([sys.executable, '-m', 'dla_jax.main', *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.parametrize('method', ['atss', 'dla'])
def test_main_trains_and_evaluates(few_images_flags, tmp_path, method):
  """DLA, and ATSS as its authors ran it (centerness head and loss, its assigner, k = 9)."""
  atss = ['--config.model.head=atss', '--config.assigner.name=atss', '--config.assigner.topk=9']
  workdir = str(tmp_path / 'run')
  # From a folder outside the repository, the config named as the package ships it.
  out = _run('--config', 'shapes_tiny', '--workdir', workdir, *few_images_flags(stop_at_step=3),
             *(atss if method == 'atss' else []), cwd=tmp_path)
  assert out.startswith('backend cpu | devices: 8 x cpu | 1 process | global batch 8, 1 per '
                        'device | compute float32 | conv xla'), out
  assert 'step 3/12' in out and 'alpha' in out and 'img/s' in out
  assert 'stopped after step 3 of 12' in out
  assert ('+ centerness ' if method == 'atss' else '+ metric ') in out
  assert 'val at step 3: AP ' in out
  assert not os.path.exists(os.path.join(workdir, train.FINAL_METRICS))  # not finished
  alpha = [r['alpha'] for r in metric_writer.read_metrics(workdir, 'train')]
  # Eq. 2 with T = 12 epochs of one step each; ATSS is alpha = 1 throughout.
  expected = [1.0] * 3 if method == 'atss' else [0.9 + 0.1 * np.exp(-t / 12**0.5)
                                                   for t in range(3)]
  np.testing.assert_allclose(alpha, expected, rtol=1e-6)


def test_main_predicts_and_exports_a_trained_run(trained_run, few_images, few_images_flags,
                                                 tmp_path):
  _, workdir, _ = trained_run
  images = os.path.join(few_images[0], '00000[01].png')
  common = ['--config', 'configs/shapes_tiny.py', '--workdir', workdir, *few_images_flags()]
  drawn = tmp_path / 'drawn'
  _run('--mode', 'predict', *common, '--images', images, '--out', str(drawn),
       '--nokeep_freed_memory')
  assert sorted(os.listdir(drawn)) == ['000000.png', '000001.png']
  exported = str(tmp_path / 'export')
  out = _run('--mode', 'export', *common, '--out', exported)
  assert f'exported step 12 of {workdir}' in out
  # The export alone: no --config, no --workdir.
  _run('--mode', 'predict', '--weights', exported, '--images', images, '--out',
       str(tmp_path / 'drawn_from_export'))
  for name in os.listdir(drawn):
    assert (drawn / name).read_bytes() == (tmp_path / 'drawn_from_export' / name).read_bytes()
  # The serialized programs, predicting without the model code.
  stablehlo = str(tmp_path / 'stablehlo')
  out = _run('--mode', 'export', '--format', 'stablehlo', *common, '--out', stablehlo)
  assert f'exported step 12 of {workdir} to {stablehlo} as StableHLO for cpu, cuda, tpu' in out
  _run('--mode', 'predict', '--weights', stablehlo, '--images', images, '--out',
       str(tmp_path / 'drawn_from_stablehlo'))
  assert sorted(os.listdir(tmp_path / 'drawn_from_stablehlo')) == ['000000.png', '000001.png']


def test_sigterm_mid_run_saves_its_step_and_the_next_run_resumes_there(few_images_flags,
                                                                        tmp_path):
  workdir = str(tmp_path / 'run')
  command = [sys.executable, '-m', 'dla_jax.main', '--mode', 'train', '--config',
             'configs/shapes_tiny.py', '--workdir', workdir]
  process = subprocess.Popen([*command, *few_images_flags()], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  lines = []
  for line in process.stdout:
    lines.append(line)
    if line.startswith('step 3/'):
      process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 0
  saved = [l for l in lines if l.startswith('SIGTERM: saved a checkpoint at step ')]
  assert saved, ''.join(lines[-5:])
  step = int(saved[0].split('at step ')[1].split()[0])
  assert 3 <= step < 10, ''.join(lines)
  assert str(step) in os.listdir(os.path.join(workdir, 'checkpoints'))

  out = subprocess.run([*command, *few_images_flags(stop_at_step=step + 2)], cwd=REPO,
                       capture_output=True, text=True, timeout=300).stdout
  logged = [l for l in out.splitlines() if l.startswith('step ')]
  assert [l.split()[1] for l in logged] == [f'{step + 1}/12', f'{step + 2}/12'], out


def test_run_killed_and_resumed_ends_bit_identical_to_an_uninterrupted_run(
    few_images_flags, trained_run, tmp_path):
  """Killed at a step drawn with a fixed seed (printed); the uninterrupted run is
  ``trained_run``, the same config trained in one go."""
  config, straight, _ = trained_run
  steps = config.optim.epochs
  # From step 5 on, the save of step 2 is complete: orbax starts the save of step 4 only once
  # the one before has finished.
  kill_at = int(np.random.default_rng(30).integers(5, steps))
  print(f'killing the run at step {kill_at}')
  killed = str(tmp_path / 'killed')
  command = [sys.executable, '-m', 'dla_jax.main', '--mode', 'train', '--config',
             'configs/shapes_tiny.py', '--workdir', killed, *few_images_flags(),
             '--config.train.checkpoint_every=2']
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  for line in process.stdout:
    if line.startswith(f'step {kill_at}/'):
      process.kill()
      break
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL, f'not killed at step {kill_at}'
  resumed = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True,
                           timeout=300).stdout
  first_step = int(re.search(r'^step (\d+)/', resumed, flags=re.M).group(1))
  assert 1 < first_step <= kill_at + 1, (kill_at, resumed)  # it resumed, not restarted

  a, _, step_a = checkpoint.restore_weights(config, straight)
  b, _, step_b = checkpoint.restore_weights(config, killed)
  assert step_a == step_b == steps
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_resumed_run_draws_no_initial_weights_and_continues_exactly(trained_run, tmp_path,
                                                                      monkeypatch):
  config, straight, _ = trained_run
  workdir = tmp_path / 'run'
  shutil.copytree(straight, workdir)
  shutil.rmtree(workdir / 'checkpoints' / '12')  # as if stopped after the save of step 11

  def refuse(*_):
    raise AssertionError('a resumed run drew initial weights')

  monkeypatch.setattr(detector, 'init_variables', refuse)
  state = train.train(config, str(workdir))
  assert int(state.step) == config.optim.epochs
  want, _, _ = checkpoint.restore_weights(config, straight)
  jax.tree.map(np.testing.assert_array_equal, want, jax.device_get(state.params))


def test_a_run_compiles_each_step_once_per_orientation_however_often_it_evaluates(
    tmp_path, capsys, caplog):
  rng = np.random.default_rng(0)
  images, annotations = [], []
  for i in range(16):
    h, w = (96, 128) if i % 2 else (128, 96)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(tmp_path / f'{i}.png')
    images.append({'id': i + 1, 'file_name': f'{i}.png', 'height': h, 'width': w})
    annotations.append({'id': i + 1, 'image_id': i + 1, 'category_id': i % 6 + 1,
                        'bbox': [10, 10, 40, 30], 'area': 1200, 'iscrowd': 0})
  (tmp_path / 'instances.json').write_text(json.dumps({
      'images': images, 'annotations': annotations,
      'categories': [{'id': i, 'name': str(i)} for i in range(1, 7)]}))
  config = shapes_tiny.get_config()
  config.data.source = 'coco_json'
  config.data.train_images = config.data.val_images = str(tmp_path)
  config.data.train_annotations = config.data.val_annotations = str(tmp_path / 'instances.json')
  config.data.image_size, config.data.scale = (96, 128), (128, 96)
  config.data.short_side_range = (96, 96)
  config.train.global_batch = config.train.eval_batch = 8
  config.model.conv_impl = 'xla'
  config.optim.epochs = 2  # two batches an epoch, one of each orientation
  config.train.eval_every_epochs = 1  # evaluates after epoch 1, then at the end
  config.train.log_every = 1
  caplog.set_level(logging.WARNING, logger='jax._src.interpreters.pxla')
  with jax.log_compiles(True):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  out = capsys.readouterr().out
  compiles = re.findall(r'compiled the train step for (\d+)x(\d+) inputs in [\d.]+ s', out)
  assert sorted(compiles) == [('128', '96'), ('96', '128')], out
  assert len(re.findall(r'^step \d+/4 ', out, flags=re.M)) == 4, out
  assert len(re.findall(r'^val at step [24]: AP', out, flags=re.M)) == 2, out
  lowered = collections.Counter(
      r.getMessage().split(' with ')[0] for r in caplog.records
      if r.getMessage().startswith('Compiling jit('))
  assert lowered['Compiling jit(train_step)'] == 2, lowered
  assert lowered['Compiling jit(eval_step)'] == 2, lowered  # one per orientation, not per call


def test_a_run_keeps_compiled_programs_in_the_cache_folder_it_is_given(few_images_flags,
                                                                      trained_run, tmp_path):
  """The cache folder is train.compilation_cache_dir, else $JAX_COMPILATION_CACHE_DIR, else
  <workdir>/compilation_cache. Each run evaluates a copy of ``trained_run``, whose evaluation
  compiled the eval step into the suite's cache (a cached program is found only through the
  folder it was written from)."""
  suite_cache = os.environ['JAX_COMPILATION_CACHE_DIR']
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}

  def evaluate(name, *overrides, **variables):
    workdir = tmp_path / name
    shutil.copytree(trained_run[1], workdir)
    assert not (workdir / 'compilation_cache').exists()
    command = [sys.executable, '-m', 'dla_jax.main', '--mode', 'evaluate', '--config',
               'configs/shapes_tiny.py', '--workdir', str(workdir), *few_images_flags(),
               *overrides]
    log = subprocess.run(command, cwd=REPO, env={**env, 'JAX_LOG_COMPILES': '1', **variables},
                         capture_output=True, text=True, timeout=600, check=True).stderr
    return workdir / 'compilation_cache', log

  hit = "Persistent compilation cache hit for 'jit_eval_step'"
  own, log = evaluate('environment', JAX_COMPILATION_CACHE_DIR=suite_cache)
  assert hit in log and not own.exists(), log[-3000:]
  own, log = evaluate('configured', f'--config.train.compilation_cache_dir={suite_cache}',
                      JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'elsewhere'))
  assert hit in log and not own.exists(), log[-3000:]
  assert not (tmp_path / 'elsewhere').exists()
  own, log = evaluate('neither')
  assert hit not in log
  assert any(p.name.startswith('jit_eval_step-') for p in own.iterdir()), log[-3000:]
