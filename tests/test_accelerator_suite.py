"""The accelerator suite keeps to its time budget, dropping the largest cases first and naming
them, survives a case that runs out of memory, and runs end to end on the CPU."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from dla_jax.tools import accelerator_suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ['bfloat16', 'float32']


def _fake_case(seconds: float, fail: dict[str, str] | None = None):
  """A case_command that, instead of benchmarking, sleeps ``seconds`` and writes a result as
  ``benchmark --json`` does; cases named in ``fail`` print that text and exit 1."""
  fail = fail or {}

  def command(case, out, image_size, fcos, base, repeats, warmup):
    del fcos, base, repeats, warmup
    if case.name in fail:
      return [sys.executable, '-c', f'print({fail[case.name]!r}); raise SystemExit(1)']
    result = {'machine': 'fake', 'device_kind': 'fake', 'devices': 1, 'backbone': 'resnet50',
              'image_size': list(image_size), 'batch': case.per_device, 'dtype': case.dtype,
              'dla': {f'{case.part}_s': 0.5, 'host_ms': {'transfer': 1.0, 'dispatch': 0.5}},
              'fcos': {}}
    path = out / f'{case.name}.json'
    return [sys.executable, '-c', f'import time; time.sleep({seconds}); '
            f'open({str(path)!r}, "w").write({json.dumps(result)!r})']

  return command


def _run(tmp_path, monkeypatch, budget, seconds, fail=None, batches=(2, 4, 8)):
  monkeypatch.setattr(accelerator_suite, 'case_command', _fake_case(seconds, fail))
  return accelerator_suite.run_suite(tmp_path, budget, [], (800, 1344), list(batches), 8,
                                     DTYPES, fcos=False, repeats=20, warmup=3)


def test_cases_run_cheapest_first():
  names = [c.name for c in accelerator_suite.cases([2, 4, 8], 8, DTYPES)]
  assert names == ['train_bfloat16_b2', 'train_float32_b2', 'infer_bfloat16_b8',
                   'infer_float32_b8', 'train_bfloat16_b4', 'train_float32_b4',
                   'train_bfloat16_b8', 'train_float32_b8']


def test_cases_the_time_left_cannot_hold_are_dropped_and_named(tmp_path, monkeypatch):
  # Each case takes about 1.2 s (an interpreter's start and a 1 s sleep); 2 s hold one.
  results = _run(tmp_path, monkeypatch, budget=2.0, seconds=1.0)
  assert [r['case'] for r in results if 'dropped' not in r] == ['train_bfloat16_b2']
  dropped = [r for r in results if 'dropped' in r]
  assert len(dropped) == 7
  assert all(r['dropped'].startswith('time budget') for r in dropped)
  report = (tmp_path / 'suite.md').read_text()
  assert '- dropped train_float32_b8: time budget' in report
  assert re.search(r'\| train \| bfloat16 \| 2 \| 4\.0 \| 500\.0 \|', report), report
  assert json.loads((tmp_path / 'suite.json').read_text()) == results


def test_a_case_still_running_at_the_limit_is_stopped(tmp_path, monkeypatch):
  start = time.monotonic()
  results = _run(tmp_path, monkeypatch, budget=1.5, seconds=60)
  assert time.monotonic() - start < 15
  assert results[0]['dropped'] == 'stopped at the time limit'
  assert {r['dropped'] for r in results[1:]} == {'time budget: spent'}


def test_out_of_memory_drops_the_larger_batches_of_that_case_only(tmp_path, monkeypatch):
  oom = 'jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory'
  results = {r['case']: r for r in _run(tmp_path, monkeypatch, budget=60, seconds=0,
                                         fail={'train_bfloat16_b4': oom,
                                               'infer_float32_b8': 'ValueError: bad'})}
  assert results['train_bfloat16_b4']['dropped'] == 'out of memory'
  assert results['train_bfloat16_b8']['dropped'] == 'a smaller batch ran out of memory'
  assert results['infer_float32_b8']['dropped'] == 'failed (exit 1): ValueError: bad'
  for ran in ('train_bfloat16_b2', 'train_float32_b4', 'train_float32_b8'):
    assert 'dropped' not in results[ran], results[ran]


def test_config_flags_are_passed_on():
  argv = ['--out', 'x', '--config', 'shapes_tiny', '--config.model.dtype=float32',
          '--time_budget_s', '60', '--config.train.seed', '3']
  assert accelerator_suite.config_args(argv) == ['--config', 'shapes_tiny',
                                                 '--config.model.dtype=float32',
                                                 '--config.train.seed', '3']


def test_a_case_is_the_benchmark_with_the_config_first_and_the_steps_asked(tmp_path):
  command = accelerator_suite.case_command(accelerator_suite.Case('train', 'bfloat16', 4),
                                          tmp_path, (64, 96), False, ['--config', 'x'], 7, 2)
  assert command[1:5] == ['-m', 'dla_jax.tools.benchmark', '--config', 'x']
  text = ' '.join(command)
  for expected in ('--image_size 64,96', '--per_device_batch 4', '--dtype bfloat16',
                   '--parts train,host ', '--repeats 7 --warmup 2',
                   f'--json {tmp_path / "train_bfloat16_b4.json"}'):
    assert expected in text, text


@pytest.mark.slow
def test_suite_measures_training_and_inference_on_the_cpu(tmp_path):
  """Its smallest setting: one timed step a case, XLA's own convolutions (the suite's cases
  are the same on every backend)."""
  result = subprocess.run(
      [sys.executable, '-m', 'dla_jax.tools.accelerator_suite', '--out', str(tmp_path),
       '--config', 'shapes_tiny', '--config.model.conv_impl=xla', '--image_size', '64,96',
       '--dtypes', 'float32', '--train_per_device', '1', '--infer_per_device', '1',
       '--repeats', '1', '--warmup', '0'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = {r['case']: r for r in json.loads((tmp_path / 'suite.json').read_text())}
  assert set(results) == {'train_float32_b1', 'infer_float32_b1'}, results
  train, infer = results['train_float32_b1'], results['infer_float32_b1']
  assert train['batch'] == train['devices'] == 8  # one image on each simulated device
  assert train['dla']['train_s'] > 0 and train['dla']['train_compile_s'] > 0
  assert set(train['dla']['host_ms']) == {'hand-off', 'transfer', 'dispatch', 'metrics'}
  assert infer['dla']['infer_s'] > 0 and 'train_s' not in infer['dla']
  rows = [line for line in result.stdout.splitlines() if line.startswith('| train |') or
          line.startswith('| infer |')]
  assert len(rows) == 2, result.stdout


def test_the_suite_without_a_folder_says_so_in_one_line():
  result = subprocess.run([sys.executable, '-m', 'dla_jax.tools.accelerator_suite'], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert len(result.stderr.splitlines()) == 1 and '--out' in result.stderr, result.stderr
