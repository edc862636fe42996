"""Turns sweep folders (from ``launch/sweep.py``) into markdown tables and a plot.

  python launch/summarize_sweep.py ~/sweeps/dla_vs_atss [more folders] [--runs dla,atss]
      [--compare dla,atss] [--metrics AP,AP50,AP75] [--plot ap.png]

Prints, per run name, the final val metrics of its finished runs as mean +- std over seeds
(sample std, n - 1), with the seeds and their count; runs not finished yet are listed under
the table, never averaged in. Several folders are read as one sweep (a (name, seed) pair may
appear in only one of them); ``--runs`` picks and orders the rows.

``--compare A,B`` adds the paired comparison over the seeds both finished: per metric the
mean and std of A - B, the t statistic mean / (std / sqrt(n)) and how many seeds A won. Seeds
fix the initialisation and the data order, so pairing by seed removes the variance the two
runs share.

``--plot`` writes val AP over training steps (mean over seeds, one line per run name); runs
evaluated only at the end give one point each, ``--config.train.eval_every_epochs=N`` gives
curves.
"""

import argparse
import json
import os

import numpy as np

import sweep as sweep_lib

# {run name: {seed: val metrics in step order, the last one the run's final_metrics.json}}
Results = dict[str, dict[int, list[dict]]]


def collect(folders: list[str]) -> tuple[Results, list[tuple[str, int]]]:
  """The finished runs of the sweep folders, and the (name, seed) of the unfinished ones."""
  results, unfinished, where = {}, [], {}
  for folder in folders:
    with open(os.path.join(folder, 'sweep.json')) as f:
      runs = json.load(f)
    for run in runs:
      key = (run['name'], run['seed'])
      if key in where:
        raise ValueError(f'run {key[0]} seed {key[1]} is in two sweeps: {where[key]} and '
                         f'{run["workdir"]}')
      where[key] = run['workdir']
      if not sweep_lib.finished(run['workdir']):
        unfinished.append(key)
        continue
      with open(os.path.join(run['workdir'], sweep_lib.FINAL_METRICS)) as f:
        final = json.load(f)
      with open(os.path.join(run['workdir'], 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
      during = sorted((r for r in rows if r['split'] == 'val' and r['step'] < final['step']),
                      key=lambda r: r['step'])
      results.setdefault(run['name'], {})[run['seed']] = [*during, final]
  return results, unfinished


def select(results: Results, names: list[str]) -> Results:
  """The runs ``names``, in that order; a name with no finished run is an error."""
  missing = [n for n in names if n not in results]
  if missing:
    raise ValueError(f'no finished run named {", ".join(missing)}; finished: '
                     f'{", ".join(results)}')
  return {n: results[n] for n in names}


def _mean_std(values: np.ndarray) -> str:
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{values.mean():.3f} +- {values.std(ddof=1):.3f}'


def table(results: Results, metrics: list[str]) -> str:
  """Markdown: one row per run name, final val metrics as mean +- std over seeds."""
  lines = ['| run | seeds | ' + ' | '.join(metrics) + ' |', '|' + ' --- |' * (len(metrics) + 2)]
  for name, by_seed in results.items():
    cells = [_mean_std(np.array([rows[-1][m] for rows in by_seed.values()])) for m in metrics]
    seeds = ','.join(str(s) for s in sorted(by_seed))
    lines.append(f'| {name} | {seeds} (n={len(by_seed)}) | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def compare(results: Results, a: str, b: str, metrics: list[str]) -> str:
  """Markdown: the paired difference ``a - b`` over the seeds both runs finished."""
  seeds = sorted(set(results[a]) & set(results[b]))
  if not seeds:
    raise ValueError(f'{a} and {b} share no finished seed')
  lines = [f'{a} - {b}, paired over seeds {",".join(map(str, seeds))} (n={len(seeds)}):', '',
           '| metric | mean +- std of the difference | t | seeds won by ' + a + ' |',
           '| --- | --- | --- | --- |']
  for metric in metrics:
    diff = np.array([results[a][s][-1][metric] - results[b][s][-1][metric] for s in seeds])
    if len(diff) > 1 and diff.std(ddof=1) > 0:
      t = f'{diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))):.1f}'
    else:
      t = 'n/a'
    lines.append(f'| {metric} | {_mean_std(diff)} | {t} | {int((diff > 0).sum())}/{len(diff)} |')
  return '\n'.join(lines)


def plot(results: Results, path: str, metric: str = 'AP') -> None:
  """Val ``metric`` over training steps, mean over seeds, one line per run name."""
  import matplotlib  # pylint: disable=g-import-not-at-top  (only for the plot)
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, by_seed in results.items():
    steps = sorted({r['step'] for rows in by_seed.values() for r in rows})
    means = [np.mean([r[metric] for rows in by_seed.values() for r in rows if r['step'] == s])
             for s in steps]
    ax.plot(steps, means, marker='o', label=f'{name} (n={len(by_seed)})')
  ax.set_xlabel('step')
  ax.set_ylabel(f'val {metric}')
  ax.legend()
  fig.savefig(path, dpi=80, bbox_inches='tight')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('folders', nargs='+')
  parser.add_argument('--metrics', default='AP,AP50,AP75')
  parser.add_argument('--runs', default='', help='comma-separated run names, in table order')
  parser.add_argument('--compare', default='', help='A,B: paired difference A - B by seed')
  parser.add_argument('--plot', default='', help='PNG path for val AP over training')
  args = parser.parse_args()
  metrics = args.metrics.split(',')
  try:
    results, unfinished = collect(args.folders)
    if args.runs:
      results = select(results, args.runs.split(','))
    pair = args.compare.split(',') if args.compare else []
    if pair and (len(pair) != 2 or any(p not in results for p in pair)):
      raise ValueError(f'--compare needs two finished run names, got {args.compare!r}')
  except ValueError as e:
    raise SystemExit(str(e)) from None
  if not results:
    raise SystemExit(f'{", ".join(args.folders)}: no finished run in these sweeps')
  print(table(results, metrics))
  if unfinished:
    print('\nnot finished: ' + ', '.join(f'{n} seed {s}' for n, s in unfinished))
  if pair:
    print('\n' + compare(results, *pair, metrics))
  if args.plot:
    plot(results, args.plot)
    print(f'\nwrote {args.plot}')


if __name__ == '__main__':
  main()
