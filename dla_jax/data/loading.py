"""Loads batches ahead of their consumer, in worker processes and threads, with grain.

A batch source is a picklable callable ``load(position) -> batch`` (``batching.TrainBatches``,
``batching.EvalBatches``), pure in its position. ``stream(load, start, stop)`` yields
``load(start), load(start + 1), ...`` in that order, loaded ahead:

- ``num_workers = 0``: in this process, by ``num_threads`` threads (0: each batch when it is
  asked for, in the caller's thread, for debugging).
- ``num_workers = n > 0``: grain's ``mp_prefetch``. Worker ``w`` loads positions
  ``start + w, start + w + n, ...`` with ``num_threads`` threads of its own, and hands each batch
  back through shared memory, so the main process neither decodes nor copies; grain
  interleaves the workers back into position order.

The position is the whole input state: a resumed run starts a new stream at its saved position
and gets the same batches, whatever its number of workers. (grain's own iterator state would
also be exact, but it records each worker's slice, so it would tie a checkpoint to the worker
count it was saved with.)

An exception raised while loading, such as ``DataError`` naming a corrupt or missing image, is
raised again from ``next`` with the worker's traceback, and a worker that dies raises
``RuntimeError``: a run stops, it neither hangs nor skips the image.
"""

import os
from typing import Any, Callable

from absl import flags
import grain

Load = Callable[[int], Any]
_ENDLESS = 2**62  # the stop of a training stream: more positions than any run reaches
MAX_AUTO_WORKERS = 32


def usable_cores() -> int:
  """Cores this process may run on (its affinity mask, as ``taskset`` or a container sets)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def resolve_workers(num_workers: int) -> int:
  """``data.num_workers``, with -1 (the default) resolved from the cores: all but two, which
  the main process uses for dispatch and transfer, at least one and at most 32."""
  if num_workers >= 0:
    return num_workers
  return max(1, min(MAX_AUTO_WORKERS, usable_cores() - 2))


def stream(load: Load, start: int, stop: int | None = None, *, num_workers: int,
           num_threads: int) -> grain.DatasetIterator:
  """Iterates over ``load(start), ..., load(stop - 1)`` (``stop`` None: without end).

  Args:
    load: picklable position -> batch (a dict of numpy arrays).
    start: the first position.
    stop: the position after the last, or None.
    num_workers: loading processes (0: this one; -1: from the cores, see ``resolve_workers``).
    num_threads: loading threads per loading process; each keeps one batch in flight.

  Returns:
    grain's iterator; ``close()`` it to stop the workers.
  """
  num_workers = resolve_workers(num_workers)
  dataset = grain.MapDataset.range(start, _ENDLESS if stop is None else stop).map(load)
  dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                      prefetch_buffer_size=num_threads))
  if num_workers:
    # grain reads its absl flags when it starts workers; a caller without absl.app (a notebook,
    # pytest) has not parsed any, and grain's defaults are what we want.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                               per_worker_buffer_size=1))
  return iter(dataset)
