"""Runs a sweep: every named list of config overrides, for every seed, each in its own workdir.

  python launch/sweep.py --config configs/shapes_tiny.py --sweep launch/sweeps/dla_vs_atss.py \
      --seeds 0,1,2 --out ~/sweeps/dla_vs_atss [--runs dla,atss] [--dry_run] \
      [-- dla_jax.main flags for all runs]
  python launch/summarize_sweep.py ~/sweeps/dla_vs_atss

A sweep file defines ``get_sweep()``, returning {run name: [--config.* overrides]}. Run
``NAME`` with seed ``S`` trains and evaluates in ``OUT/NAME/seed_S`` through
``python -m dla_jax.main`` with ``--config.train.seed=S``; its final COCO metrics land in
that workdir's ``final_metrics.json``, every evaluation in its ``metrics.jsonl``. Runs already
finished (with ``final_metrics.json``) are skipped, and an interrupted run resumes from its
checkpoints, so rerunning the same command completes a sweep. ``OUT/sweep.json`` records each run's command; several invocations
(other seeds, other sweep files) may share one folder, and their records add up.
"""

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys

# What ``dla_jax.train.train_and_evaluate`` writes last (``dla_jax.train.FINAL_METRICS``).
FINAL_METRICS = 'final_metrics.json'


def load_sweep(path: str) -> dict[str, list[str]]:
  """{run name: overrides} from the sweep file's ``get_sweep()``."""
  spec = importlib.util.spec_from_file_location('sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sweep = module.get_sweep()
  for name, overrides in sweep.items():
    if not name or '/' in name or not all(o.startswith('--') for o in overrides):
      raise ValueError(f'{path}: run {name!r} needs a name without "/" and a list of '
                       f'--flag overrides, got {overrides!r}')
  return sweep


def finished(workdir: str) -> bool:
  """Whether the run in ``workdir`` trained to the end and evaluated (has ``FINAL_METRICS``);
  evaluations during training do not count."""
  return os.path.exists(os.path.join(workdir, FINAL_METRICS))


def commands(config: str, sweep: dict[str, list[str]], seeds: list[int], out: str,
             extra: list[str]) -> list[tuple[str, int, str, list[str]]]:
  """(name, seed, workdir, argv) of every run, in sweep-file order, seed by seed."""
  runs = []
  for name, overrides in sweep.items():
    for seed in seeds:
      workdir = os.path.join(out, name, f'seed_{seed}')
      argv = [sys.executable, '-m', 'dla_jax.main', '--config', config, '--workdir', workdir,
              *overrides, f'--config.train.seed={seed}', *extra]
      runs.append((name, seed, workdir, argv))
  return runs


def record_runs(out: str, runs: list[tuple[str, int, str, list[str]]]) -> None:
  """Adds ``runs`` to ``OUT/sweep.json``, keeping the records of earlier invocations (say,
  other seeds or other sweep files into the same folder); a run named again is replaced."""
  path = os.path.join(out, 'sweep.json')
  records = {}
  if os.path.exists(path):
    with open(path) as f:
      records = {(r['name'], r['seed']): r for r in json.load(f)}
  for name, seed, workdir, argv in runs:
    records[(name, seed)] = {'name': name, 'seed': seed, 'workdir': workdir,
                             'command': shlex.join(argv)}
  with open(path + '.tmp', 'w') as f:
    json.dump(list(records.values()), f, indent=1)
  os.replace(path + '.tmp', path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True,
                      help='experiment config: a file, or a packaged config name')
  parser.add_argument('--sweep', required=True, help='file defining get_sweep()')
  parser.add_argument('--seeds', default='0', help='comma-separated seeds')
  parser.add_argument('--runs', default='', help='comma-separated run names of the sweep file '
                      'to run (default: all)')
  parser.add_argument('--out', required=True, help='sweep folder')
  parser.add_argument('--dry_run', action='store_true', help='print the commands only')
  parser.add_argument('extra', nargs='*', help='after --: flags for every run')
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  sweep = load_sweep(args.sweep)
  if args.runs:
    unknown = sorted(set(args.runs.split(',')) - set(sweep))
    if unknown:
      parser.error(f'--runs: {", ".join(unknown)} not in {args.sweep} ({", ".join(sweep)})')
    sweep = {name: sweep[name] for name in args.runs.split(',')}
  runs = commands(args.config, sweep, seeds, os.path.abspath(args.out), args.extra)
  os.makedirs(args.out, exist_ok=True)
  record_runs(args.out, runs)
  for name, seed, workdir, argv in runs:
    if finished(workdir):
      print(f'{name} seed {seed}: finished, skipped', flush=True)
      continue
    print(f'{name} seed {seed}: {shlex.join(argv)}', flush=True)
    if not args.dry_run:
      subprocess.run(argv, check=True)


if __name__ == '__main__':
  main()
