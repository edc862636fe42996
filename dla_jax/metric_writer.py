"""Scalars of a run, written as TensorBoard events and as JSON lines in the workdir.

``metrics.jsonl`` (one ``{"step": ..., "split": ..., name: value}`` object a line) is what the
notebooks and sweep summaries read; the TensorBoard events are for people. Both are flushed at
every write, so a crash loses nothing that was logged. The workdir may be a bucket
(``dla_jax.workdir``): objects there cannot be appended to, so the jsonl file is rewritten
whole at each write (it holds a few thousand lines at most).
"""

import json
from typing import Mapping

from tensorboardX import SummaryWriter

from dla_jax import workdir as workdir_lib


class MetricWriter:
  """Appends scalars under ``workdir``; safe to reopen on resume (files are appended to)."""

  def __init__(self, workdir: str, enabled: bool = True):
    """``enabled=False`` (processes other than 0 in a multi-host run) writes nothing."""
    self._enabled = enabled
    if enabled:
      folder = workdir_lib.path(workdir)
      folder.mkdir(parents=True, exist_ok=True)
      self._events = SummaryWriter(str(folder / 'tensorboard'), flush_secs=5)
      self._jsonl = folder / 'metrics.jsonl'
      # A local file is appended to; a bucket's object is rewritten from the lines kept here.
      self._file = None if workdir_lib.is_remote(workdir) else self._jsonl.open('a')
      self._lines = self._jsonl.read_text() if not self._file and self._jsonl.exists() else ''

  def write(self, step: int, scalars: Mapping[str, float], split: str = 'train') -> None:
    if not self._enabled:
      return
    for name, value in scalars.items():
      self._events.add_scalar(f'{split}/{name}', float(value), step)
    self._events.flush()
    line = json.dumps({'step': int(step), 'split': split,
                       **{k: float(v) for k, v in scalars.items()}}) + '\n'
    if self._file:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines += line
      self._jsonl.write_text(self._lines)

  def close(self) -> None:
    if self._enabled:
      self._events.close()
      if self._file:
        self._file.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """The rows of ``workdir/metrics.jsonl``, optionally of one split only."""
  text = (workdir_lib.path(workdir) / 'metrics.jsonl').read_text()
  rows = [json.loads(line) for line in text.splitlines() if line.strip()]
  return [r for r in rows if split is None or r['split'] == split]
