"""Several processes joined by ``jax.distributed`` on localhost, as on several GPU hosts or a TPU
slice: two processes of 4 simulated CPU devices each train and evaluate like one process of 8,
SIGTERM sent to one of them checkpoints both at the same step, and a checkpoint that one of them
cannot read sends both back to the step before it."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from dla_jax import metric_writer

pytestmark = pytest.mark.slow  # every test here trains or compiles a detector, or starts processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _devices(count: int) -> dict[str, str]:
  """The environment with ``count`` simulated CPU devices a process, conftest's other XLA flags
  kept."""
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ['XLA_FLAGS'])
  return dict(os.environ, XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={count}')


def _start(workdir, args, processes, devices_each):
  """Starts ``processes`` processes of ``dla_jax.main`` with ``devices_each`` CPU devices each."""
  env = _devices(devices_each)
  base = [sys.executable, '-m', 'dla_jax.main', '--config', 'configs/shapes_tiny.py',
          '--workdir', workdir, *args]
  if processes == 1:
    commands = [base]
  else:
    address = f'localhost:{_free_port()}'
    commands = [[*base, '--distributed', f'--coordinator_address={address}',
                 f'--num_processes={processes}', f'--process_id={i}'] for i in range(processes)]
  return [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True) for c in commands]


def _finish(processes):
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  assert [p.returncode for p in processes] == [0] * len(processes), outputs
  return outputs


def test_two_processes_of_four_devices_train_and_evaluate_like_one_of_eight(few_images_flags,
                                                                           tmp_path):
  args = ['--mode', 'train_and_evaluate', *few_images_flags(stop_at_step=3)]
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  _finish(_start(one, args, processes=1, devices_each=8))
  lead, other = _finish(_start(two, args, processes=2, devices_each=4))
  assert 'step 3/12' in lead and 'val at step 3: AP' in lead
  assert 'step ' not in other and 'val at' not in other  # only process 0 prints
  fields = ('loss', 'loss_cls', 'loss_reg', 'loss_metric', 'num_pos', 'alpha', 'lr')
  for split in ('train', 'val'):
    a, b = metric_writer.read_metrics(one, split), metric_writer.read_metrics(two, split)
    assert [r['step'] for r in a] == [r['step'] for r in b] == ([1, 2, 3] if split == 'train'
                                                                else [3])
    for ra, rb in zip(a, b):
      for k in fields if split == 'train' else ('AP', 'AP50', 'AR100'):
        np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, err_msg=f'{split} {k}')


def test_sigterm_to_one_process_checkpoints_all_at_the_same_step(few_images_flags, tmp_path):
  workdir = str(tmp_path / 'run')
  args = ['--mode', 'train', *few_images_flags(), '--config.train.checkpoint_every=1000']
  lead, other = _start(workdir, args, processes=2, devices_each=4)
  lines = []
  for line in lead.stdout:
    lines.append(line)
    if line.startswith('step 2/'):
      other.send_signal(signal.SIGTERM)
  outputs = [''.join(lines) + lead.communicate(timeout=120)[0], other.communicate(timeout=120)[0]]
  assert [lead.returncode, other.returncode] == [0, 0], outputs
  steps = set()
  for out in outputs:
    saved = [l for l in out.splitlines() if l.startswith('SIGTERM: saved a checkpoint at step ')]
    assert len(saved) == 1, out[-2000:]
    steps.add(int(saved[0].split('at step ')[1].split()[0]))
  assert len(steps) == 1
  step = steps.pop()
  assert 2 <= step < 12
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(step)]

  resumed = _finish(_start(workdir, ['--mode', 'train', *few_images_flags(stop_at_step=step + 1)],
                           processes=2, devices_each=4))
  logged = [l for l in resumed[0].splitlines() if l.startswith('step ')]
  assert [l.split()[1] for l in logged] == [f'{step + 1}/12'], resumed[0]


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
  address = f'localhost:{_free_port()}'
  env = _devices(4)
  processes = [subprocess.Popen(
      [sys.executable, '-m', 'dla_jax.main', '--config', 'configs/shapes_tiny.py', '--workdir',
       workdir, '--mode', 'train', *few_images_flags(stop_at_step=11), '--distributed',
       f'--coordinator_address={address}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
      for i, workdir in enumerate((healthy, damaged))]
  lead, other = _finish(processes)
  assert 'checkpoint 12 in ' in other and 'cannot be read on process 1' in other, other
  assert 'cannot be read on processes [1]; every process tries the one before it' in lead, lead
  assert f'resumed from step 11 of {os.path.join(healthy, "checkpoints")}' in lead, lead
