"""The sweep runner and its summary work end to end on a two-run micro-sweep, and a rerun
skips what is finished."""

import itertools
import json
import os
import pathlib
import re
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from dla_jax import config_check
from dla_jax.configs import atss_r50_fpn_1x_coco

REPO = pathlib.Path(__file__).resolve().parent.parent
# The config the reproduction sweeps run on (docs/reproduction.md#commands).
SWEEP_BASE = str(REPO / 'configs' / 'shapes_sweep.py')
sys.path.insert(0, os.path.join(REPO, 'launch'))
import summarize_sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def _run(*args):
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_micro_sweep_runs_summarizes_and_resumes(few_images_flags, tmp_path):
  sweep_file = tmp_path / 'micro.py'
  # ATSS as test_train's CLI run trains it, whose program the suite compiles once.
  sweep_file.write_text('def get_sweep():\n'
                        "  return {'dla': ['--config.assigner.name=dla'],\n"
                        "          'atss': ['--config.model.head=atss', '--config.assigner.name=atss',\n"
                        "                   '--config.assigner.topk=9']}\n")
  data = [*few_images_flags(), '--config.train.eval_every_epochs=6']
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


def _config(overrides: list[str]) -> ml_collections.ConfigDict:
  """The config a sweep run trains: ``SWEEP_BASE`` with the run's ``--config.*`` overrides,
  parsed by ml_collections' config flag as ``dla_jax.main`` does, and checked as it does."""
  values = flags.FlagValues()
  argv = ['sweep', f'--config={SWEEP_BASE}', *overrides]
  config_flags.DEFINE_config_file('config', SWEEP_BASE, flag_values=values, sys_argv=argv)
  values(argv)
  config_check.check(values.config, num_devices=1)
  return values.config


def _build(overrides: list[str]) -> dict:
  """{dotted field: value} of ``_config(overrides)``."""
  return _fields(_config(overrides))


def _fields(config: ml_collections.ConfigDict) -> dict:
  return dict(_leaves(config.to_dict()))


def _leaves(tree: dict, prefix: str = ''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _changed(config: dict, base: dict) -> set[str]:
  return {field for field, value in config.items() if value != base[field]}


@pytest.mark.parametrize('sweep_file', sorted((REPO / 'launch' / 'sweeps').glob('*.py')),
                         ids=lambda path: path.stem)
def test_each_sweep_run_builds_a_distinct_config_changed_only_in_its_named_fields(sweep_file):
  base = _build([])
  configs = {}
  for name, overrides in sweep.load_sweep(str(sweep_file)).items():
    config = configs[name] = _build(overrides)
    named = {flag[len('--config.'):].partition('=')[0] for flag in overrides}
    changed = _changed(config, base)
    assert changed <= named, f'{name}: {changed - named} changed, not named'
    assert bool(changed) == bool(overrides), f'{name}: {overrides} leave the base unchanged'
  for (one, first), (other, second) in itertools.combinations(configs.items(), 2):
    assert first != second, f'{one} and {other} train the same config'


def test_dla_vs_atss_sweep_has_true_atss_and_the_assigner_ablation_in_both_prior_modes():
  configs = {name: _build(overrides) for name, overrides in
             sweep.load_sweep(str(REPO / 'launch' / 'sweeps' / 'dla_vs_atss.py')).items()}
  # The sweep's ATSS is the COCO ATSS config's: the base turned into ATSS by the same function.
  assert configs['atss'] == _fields(atss_r50_fpn_1x_coco.atss(_config([])))
  assert configs['dla'] == _build([])
  assert _changed(configs['atss_assigner'], configs['dla']) == {'assigner.name'}
  assert configs['atss_assigner']['assigner.name'] == 'atss'
  for name in ('dla', 'atss', 'atss_assigner'):
    assert _changed(configs[f'{name}_anchor'], configs[name]) == {'model.prior'}
    assert configs[f'{name}_anchor']['model.prior'] == 'anchor'
