"""Scalars of a run, written as TensorBoard events and as JSON lines in the workdir.

``metrics.jsonl`` (one ``{"step": ..., "split": ..., name: value}`` object a line) is what the
notebooks and sweep summaries read; the TensorBoard events are for people. Both are flushed at
every write, so a crash loses nothing that was logged.
"""

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends scalars under ``workdir``; safe to reopen on resume (files are appended to)."""

  def __init__(self, workdir: str, enabled: bool = True):
    """``enabled=False`` (processes other than 0 in a multi-host run) writes nothing."""
    self._enabled = enabled
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._events = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=5)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step: int, scalars: Mapping[str, float], split: str = 'train') -> None:
    if not self._enabled:
      return
    for name, value in scalars.items():
      self._events.add_scalar(f'{split}/{name}', float(value), step)
    self._events.flush()
    self._jsonl.write(json.dumps({'step': int(step), 'split': split,
                                  **{k: float(v) for k, v in scalars.items()}}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self._enabled:
      self._events.close()
      self._jsonl.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """The rows of ``workdir/metrics.jsonl``, optionally of one split only."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if split is None or r['split'] == split]
