"""The sweep runner and its summary work end to end on a two-run micro-sweep, and a rerun
skips what is finished."""

import json
import os
import re
import subprocess
import sys

import pytest

from dla_jax.configs import atss_r50_fpn_1x_coco
from dla_jax.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'launch'))
import summarize_sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def _run(*args):
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_micro_sweep_runs_summarizes_and_resumes(few_images, tmp_path):
  images, annotations = few_images
  sweep_file = tmp_path / 'micro.py'
  sweep_file.write_text('def get_sweep():\n'
                        "  return {'dla': ['--config.assigner.name=dla'],\n"
                        "          'atss': ['--config.assigner.name=atss']}\n")
  data = ['--config.data.source=coco_json', f'--config.data.train_images={images}',
          f'--config.data.val_images={images}', f'--config.data.train_annotations={annotations}',
          f'--config.data.val_annotations={annotations}', '--config.train.global_batch=8',
          '--config.train.eval_batch=8', '--config.optim.epochs=2',
          '--config.train.eval_every_epochs=1', '--config.train.log_every=1']
  out = tmp_path / 'sweep'
  sweep = ['launch/sweep.py', '--config', 'configs/shapes_tiny.py', '--sweep', str(sweep_file),
           '--seeds', '3', '--out', str(out), '--', *data]
  first = _run(*sweep)
  assert 'dla seed 3: ' in first and 'atss seed 3: ' in first
  for name in ('dla', 'atss'):
    assert os.path.exists(out / name / 'seed_3' / 'final_metrics.json')

  summary = _run('launch/summarize_sweep.py', str(out), '--plot', str(tmp_path / 'ap.png'))
  for name in ('dla', 'atss'):
    assert re.search(rf'^\| {name} \| 3 \(n=1\) \| \d\.\d{{3}} \| \d\.\d{{3}} \| \d\.\d{{3}} \|$',
                     summary, flags=re.M), summary
  assert os.path.getsize(tmp_path / 'ap.png') > 0

  again = _run(*sweep)
  assert again.count('finished, skipped') == 2, again


def _fake_run(folder, name, seed, val_aps, finished=True):
  """A workdir with val AP ``val_aps`` at steps 5, 10, ...; a finished run's last one is also
  in its final_metrics.json."""
  workdir = folder / name / f'seed_{seed}'
  workdir.mkdir(parents=True)
  rows = [{'split': 'val', 'step': 5 * (i + 1), 'AP': ap, 'AP50': 2 * ap}
          for i, ap in enumerate(val_aps)]
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  if finished:
    (workdir / 'final_metrics.json').write_text(json.dumps(rows[-1]))
  return {'name': name, 'seed': seed, 'workdir': str(workdir), 'command': 'python -m ...'}


def _fake_sweep(folder, runs):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / 'sweep.json').write_text(json.dumps(runs))


def test_summary_averages_finished_runs_and_pairs_by_seed(tmp_path):
  _fake_sweep(tmp_path / 'one', [
      _fake_run(tmp_path / 'one', 'dla', 0, [0.2, 0.4]),
      _fake_run(tmp_path / 'one', 'dla', 1, [0.3, 0.5]),
      _fake_run(tmp_path / 'one', 'atss', 0, [0.1, 0.3]),
      _fake_run(tmp_path / 'one', 'atss', 2, [0.9], finished=False),  # evaluated mid-way
  ])
  _fake_sweep(tmp_path / 'two', [_fake_run(tmp_path / 'two', 'atss', 1, [0.2, 0.45])])
  results, unfinished = summarize_sweep.collect([str(tmp_path / 'one'), str(tmp_path / 'two')])
  assert unfinished == [('atss', 2)]
  assert sorted(results['atss']) == [0, 1]
  rows = summarize_sweep.table(summarize_sweep.select(results, ['atss', 'dla']), ['AP', 'AP50'])
  # AP of atss: 0.3 and 0.45 (mean 0.375, sample std 0.106); dla: 0.4 and 0.5.
  assert rows.splitlines()[2] == '| atss | 0,1 (n=2) | 0.375 +- 0.106 | 0.750 +- 0.212 |'
  assert rows.splitlines()[3] == '| dla | 0,1 (n=2) | 0.450 +- 0.071 | 0.900 +- 0.141 |'
  # Paired differences 0.1 and 0.05: mean 0.075, std 0.0354, t = 0.075 / (0.0354 / sqrt 2) = 3.
  paired = summarize_sweep.compare(results, 'dla', 'atss', ['AP'])
  assert '| AP | 0.075 +- 0.035 | 3.0 | 2/2 |' in paired, paired
  with pytest.raises(ValueError, match='no finished run named gamma_0'):
    summarize_sweep.select(results, ['dla', 'gamma_0'])


def test_summary_refuses_a_run_in_two_sweeps(tmp_path):
  for folder in ('one', 'two'):
    _fake_sweep(tmp_path / folder, [_fake_run(tmp_path / folder, 'dla', 0, [0.2, 0.4])])
  with pytest.raises(ValueError, match='run dla seed 0 is in two sweeps'):
    summarize_sweep.collect([str(tmp_path / 'one'), str(tmp_path / 'two')])


def test_sweep_reads_the_file_training_writes_last():
  from dla_jax import train  # pylint: disable=g-import-not-at-top  (jax only for this test)
  assert sweep.FINAL_METRICS == train.FINAL_METRICS


def test_sweep_record_keeps_earlier_invocations(tmp_path):
  sweep.record_runs(str(tmp_path), [('dla', 0, '/w/dla/seed_0', ['python', 'a'])])
  sweep.record_runs(str(tmp_path), [('dla', 1, '/w/dla/seed_1', ['python', 'b']),
                                    ('dla', 0, '/w/dla/seed_0', ['python', 'c'])])
  records = json.loads((tmp_path / 'sweep.json').read_text())
  assert [(r['name'], r['seed'], r['command']) for r in records] == [
      ('dla', 0, 'python c'), ('dla', 1, 'python b')]


def test_runs_flag_picks_runs_of_the_sweep_file_and_refuses_unknown_ones(tmp_path):
  base = ['launch/sweep.py', '--config', 'shapes_sweep', '--sweep',
          'launch/sweeps/dla_vs_atss.py', '--seeds', '0,1', '--out', str(tmp_path), '--dry_run']
  out = _run(*base, '--runs', 'atss,dla')
  assert [line.split(':')[0] for line in out.splitlines()] == [
      'atss seed 0', 'atss seed 1', 'dla seed 0', 'dla seed 1']
  assert ('--config.model.head=atss --config.assigner.name=atss --config.assigner.topk=9'
          in out)
  result = subprocess.run([sys.executable, *base, '--runs', 'dla,simota'], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and '--runs: simota not in' in result.stderr


def test_dla_vs_atss_sweep_has_true_atss_and_the_assigner_ablation_in_both_prior_modes():
  runs = sweep.load_sweep(os.path.join(REPO, 'launch', 'sweeps', 'dla_vs_atss.py'))
  # The sweep's ATSS is the COCO ATSS config's: the fields atss() sets, to the same values.
  config = default.get_config()
  changed = atss_r50_fpn_1x_coco.atss(default.get_config())
  overrides = {}
  for flag in runs['atss']:
    field, value = flag[len('--config.'):].split('=')
    overrides[field] = value
  assert overrides == {f'{section}.{key}': str(value)
                       for section in ('model', 'assigner')
                       for key, value in changed[section].items()
                       if value != config[section][key]}
  assert runs['atss_assigner'] == ['--config.assigner.name=atss']
  for name in ('dla', 'atss', 'atss_assigner'):
    assert runs[f'{name}_anchor'] == runs[name] + ['--config.model.prior=anchor']
