"""Turns a sweep folder (from ``launch/sweep.py``) into markdown tables and a plot.

  python launch/summarize_sweep.py ~/sweeps/dla_vs_atss [--plot ap.png] [--metrics AP,AP50]

Prints, per run name, the final val metrics as mean +- std over its seeds (sample std, n - 1),
with the seeds and their count, and writes a plot of val AP over training steps (mean over
seeds, one line per run name) when ``--plot`` is given; runs evaluated only at the end give
one point each, ``--config.train.eval_every_epochs=N`` gives curves.
"""

import argparse
import json
import os

import numpy as np


def collect(folder: str) -> dict[str, dict[int, list[dict]]]:
  """{run name: {seed: val rows in step order}} of the sweep's finished evaluations."""
  with open(os.path.join(folder, 'sweep.json')) as f:
    runs = json.load(f)
  results = {}
  for run in runs:
    path = os.path.join(run['workdir'], 'metrics.jsonl')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    val = sorted((r for r in rows if r['split'] == 'val'), key=lambda r: r['step'])
    if val:
      results.setdefault(run['name'], {})[run['seed']] = val
  return results


def table(results: dict[str, dict[int, list[dict]]], metrics: list[str]) -> str:
  """Markdown: one row per run name, final val metrics as mean +- std over seeds."""
  lines = ['| run | seeds | ' + ' | '.join(metrics) + ' |', '|' + ' --- |' * (len(metrics) + 2)]
  for name, by_seed in results.items():
    cells = []
    for metric in metrics:
      values = np.array([rows[-1][metric] for rows in by_seed.values()])
      std = values.std(ddof=1) if len(values) > 1 else float('nan')
      cells.append(f'{values.mean():.3f} +- {std:.3f}' if len(values) > 1
                   else f'{values.mean():.3f}')
    seeds = ','.join(str(s) for s in sorted(by_seed))
    lines.append(f'| {name} | {seeds} (n={len(by_seed)}) | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(results: dict[str, dict[int, list[dict]]], path: str, metric: str = 'AP') -> None:
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
  parser.add_argument('folder')
  parser.add_argument('--metrics', default='AP,AP50,AP75')
  parser.add_argument('--plot', default='', help='PNG path for val AP over training')
  args = parser.parse_args()
  results = collect(args.folder)
  if not results:
    raise SystemExit(f'{args.folder}: no finished evaluation in this sweep')
  print(table(results, args.metrics.split(',')))
  if args.plot:
    plot(results, args.plot)
    print(f'wrote {args.plot}')


if __name__ == '__main__':
  main()
