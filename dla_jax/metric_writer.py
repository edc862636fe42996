"""Scalars of a run, written as TensorBoard events and as JSON lines in the workdir.

``metrics.jsonl`` (one ``{"step": ..., "split": ..., name: value}`` object a line) is what the
notebooks and sweep summaries read; the TensorBoard events are for people. Both are flushed at
every write, so a crash loses nothing that was logged. The workdir may be a bucket
(``dla_jax.workdir``): objects there cannot be appended to, so both files are rewritten whole
at each write (they hold a few thousand steps at most).
"""

import json
from typing import Mapping

from etils import epath

from dla_jax import tensorboard_events
from dla_jax import workdir as workdir_lib


class _AppendOnly:
  """A file that grows by appending: a local one is appended to and flushed at each write; a
  bucket's object, which cannot be appended to, is rewritten whole from the bytes kept here."""

  def __init__(self, path: epath.Path, remote: bool):
    self._path = path
    self._file = None if remote else path.open('ab')
    self._kept = path.read_bytes() if remote and path.exists() else b''

  def append(self, data: bytes) -> None:
    if self._file:
      self._file.write(data)
      self._file.flush()
    else:
      self._kept += data
      self._path.write_bytes(self._kept)

  def close(self) -> None:
    if self._file:
      self._file.close()


class MetricWriter:
  """Appends scalars under ``workdir``; safe to reopen on resume (files are appended to)."""

  def __init__(self, workdir: str, enabled: bool = True):
    """``enabled=False`` (processes other than 0 in a multi-host run) writes nothing."""
    self._enabled = enabled
    if enabled:
      folder = workdir_lib.path(workdir)
      (folder / 'tensorboard').mkdir(parents=True, exist_ok=True)
      remote = workdir_lib.is_remote(workdir)
      self._jsonl = _AppendOnly(folder / 'metrics.jsonl', remote)
      self._events = _AppendOnly(folder / 'tensorboard' / tensorboard_events.file_name(), remote)
      self._events.append(tensorboard_events.file_version_event())

  def write(self, step: int, scalars: Mapping[str, float], split: str = 'train') -> None:
    if not self._enabled:
      return
    self._events.append(tensorboard_events.scalars_event(
        step, {f'{split}/{name}': float(value) for name, value in scalars.items()}))
    self._jsonl.append((json.dumps({'step': int(step), 'split': split,
                                    **{k: float(v) for k, v in scalars.items()}}) +
                        '\n').encode())

  def close(self) -> None:
    if self._enabled:
      self._events.close()
      self._jsonl.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """The rows of ``workdir/metrics.jsonl``, optionally of one split only."""
  text = (workdir_lib.path(workdir) / 'metrics.jsonl').read_text()
  rows = [json.loads(line) for line in text.splitlines() if line.strip()]
  return [r for r in rows if split is None or r['split'] == split]
