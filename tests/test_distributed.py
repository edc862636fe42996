"""Several processes joined by ``jax.distributed`` on localhost, as on several GPU hosts or a TPU
slice: two processes of 4 simulated CPU devices each train and evaluate like one process of 8,
SIGTERM sent to one of them checkpoints both at the same step, and a checkpoint that one of them
cannot read sends both back to the step before it."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from dla_jax import checkpoint
from dla_jax import evaluation
from dla_jax import metric_writer

pytestmark = pytest.mark.slow  # every test here trains or compiles a detector, or starts processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdirs, args):
  """Starts two processes of ``dla_jax.main`` with 4 CPU devices each, joined by
  ``jax.distributed``; process i writes to ``workdirs[i]``."""
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ['XLA_FLAGS'])
  env = dict(os.environ, XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=4')
  address = f'localhost:{_free_port()}'
  return [subprocess.Popen(
      [sys.executable, '-m', 'dla_jax.main', '--config', 'configs/shapes_tiny.py', '--workdir',
       workdir, *args, '--distributed', f'--coordinator_address={address}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
      for i, workdir in enumerate(workdirs)]


def _finish(processes, lines=('', '')):
  """The outputs of ``processes`` (after the ``lines`` already read), all of which must succeed."""
  outputs = [read + p.communicate(timeout=600)[0] for read, p in zip(lines, processes)]
  assert [p.returncode for p in processes] == [0] * len(processes), outputs
  return outputs


@pytest.fixture(name='preempted_run', scope='session')
def _preempted_run(made_once, few_images_flags):
  """The suite's short run on two processes of 4 devices: process 1 gets SIGTERM once process 0
  has logged step 2, then both resume and train and evaluate to the end. ``(workdir, outputs)``:
  the processes' outputs (``sigterm``, ``resumed``, each [process 0, process 1]) and the
  checkpoints the SIGTERM left (``checkpoints``)."""
  with made_once('preempted_run') as (folder, made):
    workdir = str(folder / 'run')
    if not made:
      processes = _start([workdir] * 2, ['--mode', 'train', *few_images_flags(),
                                         '--config.train.checkpoint_every=1000'])
      lines = []
      for line in processes[0].stdout:
        lines.append(line)
        if line.startswith('step 2/'):
          processes[1].send_signal(signal.SIGTERM)
      sigterm = _finish(processes, (''.join(lines), ''))
      checkpoints = os.listdir(os.path.join(workdir, 'checkpoints'))
      resumed = _finish(_start([workdir] * 2, ['--mode', 'train_and_evaluate',
                                               *few_images_flags()]))
      (folder / 'outputs.json').write_text(json.dumps(
          {'sigterm': sigterm, 'checkpoints': checkpoints, 'resumed': resumed}))
  return workdir, json.loads((folder / 'outputs.json').read_text())


def test_sigterm_to_one_process_checkpoints_all_at_the_same_step(preempted_run):
  _, outputs = preempted_run
  steps = set()
  for out in outputs['sigterm']:
    saved = [l for l in out.splitlines() if l.startswith('SIGTERM: saved a checkpoint at step ')]
    assert len(saved) == 1, out[-2000:]
    steps.add(int(saved[0].split('at step ')[1].split()[0]))
  assert len(steps) == 1
  step = steps.pop()
  assert 2 <= step < 12
  assert outputs['checkpoints'] == [str(step)]
  logged = [l for l in outputs['resumed'][0].splitlines() if l.startswith('step ')]
  assert logged[0].split()[1] == f'{step + 1}/12', outputs['resumed'][0]


def test_two_processes_of_four_devices_train_and_evaluate_like_one_of_eight(
    preempted_run, trained_run, few_images_config, tmp_path):
  """Training against ``trained_run`` (the same config trained by one process of 8 devices) over
  the first steps, after which the two meshes' different summation orders have grown past
  float32's last digits; evaluation against one process of 8 devices on the same weights."""
  two, outputs = preempted_run
  _, one, _ = trained_run
  lead, other = outputs['resumed']
  assert 'step 12/12' in lead and 'val at step 12: AP' in lead
  assert 'step ' not in other and 'val at' not in other  # only process 0 prints
  a, b = metric_writer.read_metrics(one, 'train'), metric_writer.read_metrics(two, 'train')
  assert [r['step'] for r in a] == [r['step'] for r in b] == list(range(1, 13))
  for ra, rb in zip(a[:3], b[:3]):
    for k in ('loss', 'loss_cls', 'loss_reg', 'loss_metric', 'num_pos', 'alpha', 'lr'):
      np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, err_msg=f'step {ra["step"]} {k}')
  config = few_images_config()
  params, batch_stats, step = checkpoint.restore_weights(config, two)
  single = evaluation.evaluate(config, str(tmp_path), params, batch_stats, step)
  [distributed] = metric_writer.read_metrics(two, 'val')
  assert distributed['step'] == step == 12
  for k in ('AP', 'AP50', 'AR100'):
    np.testing.assert_allclose(distributed[k], single[k], rtol=1e-5, err_msg=k)


def test_a_checkpoint_damaged_for_one_process_sends_every_process_to_the_step_before(
    trained_run, few_images_flags, tmp_path):
  _, run, _ = trained_run
  healthy = str(tmp_path / 'healthy')
  shutil.copytree(run, healthy)
  assert sorted(os.listdir(os.path.join(healthy, 'checkpoints'))) == ['10', '11', '12']
  # Process 1 sees its own copy of the run, whose latest checkpoint is truncated: a host whose
  # view of the checkpoints differs from process 0's.
  damaged = str(tmp_path / 'damaged')
  shutil.copytree(healthy, damaged)
  for root, _, files in os.walk(os.path.join(damaged, 'checkpoints', '12', 'state')):
    for name in files:
      open(os.path.join(root, name), 'w').close()
  # Stopping at step 11: both processes resume at step 11 and have nothing left to train.
  lead, other = _finish(_start([healthy, damaged],
                               ['--mode', 'train', *few_images_flags(stop_at_step=11)]))
  assert 'checkpoint 12 in ' in other and 'cannot be read on process 1' in other, other
  assert 'cannot be read on processes [1]; every process tries the one before it' in lead, lead
  assert f'resumed from step 11 of {os.path.join(healthy, "checkpoints")}' in lead, lead
