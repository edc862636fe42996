"""Host batches onto the devices: ``put_global_batch`` puts one (training, evaluation and the
benchmarks all put batches through it); ``prefetch_to_device`` keeps a few in flight ahead of the
training loop."""

import collections
import itertools
from typing import Any, Iterator, Sequence

import jax
import numpy as np


def put_global_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding,
                     fields: Sequence[str] | None = None) -> dict[str, jax.Array]:
  """A process's slice of the global batch as global arrays laid out by ``sharding``.

  Args:
    batch: numpy arrays with this process's slice of the global batch as the leading dimension.
    sharding: how every array is laid out over the devices, e.g. ``NamedSharding(mesh,
      P('data'))``; each process contributes its local slice
      (``jax.make_array_from_process_local_data``), so this also works across hosts.
    fields: the keys to put (default all); the others are left out.

  Returns:
    A dict of global ``jax.Array``s, the global batch as leading dimension; integer dtypes
    follow JAX's x64 setting (``image_id`` arrives as int32 unless x64 is enabled).
  """
  return {k: jax.make_array_from_process_local_data(sharding, batch[k])
          for k in fields or batch}


class DevicePrefetcher:
  """Iterates over device batches, keeping ``size`` of them in flight (see prefetch_to_device).

  ``get_state`` (when the host iterator has one) is the host iterator's position after the last
  batch yielded here, not after the batches already transferred ahead, so a checkpoint saved
  between steps resumes exactly.
  """

  def __init__(self, iterator: Iterator[dict[str, np.ndarray]], sharding: jax.sharding.Sharding,
               size: int, fields: Sequence[str] | None):
    self._iterator = iter(iterator)
    self._sharding = sharding
    self._size = size
    self._fields = fields
    self._queue = collections.deque()
    self._state = self._host_state()

  def _host_state(self) -> Any:
    get_state = getattr(self._iterator, 'get_state', None)
    return get_state() if get_state else None

  def __iter__(self) -> 'DevicePrefetcher':
    return self

  def __next__(self) -> dict[str, jax.Array]:
    for batch in itertools.islice(self._iterator, self._size + 1 - len(self._queue)):
      self._queue.append((put_global_batch(batch, self._sharding, self._fields),
                          self._host_state()))
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self) -> Any:
    """The host iterator's state just after the last batch yielded here."""
    return self._state


def prefetch_to_device(iterator: Iterator[dict[str, np.ndarray]], sharding: jax.sharding.Sharding,
                       size: int = 2, fields: Sequence[str] | None = None) -> DevicePrefetcher:
  """Puts each host batch onto the devices (``put_global_batch``), ``size`` batches ahead of
  the consumer.

  Args:
    iterator: yields the host batches ``put_global_batch`` takes.
    sharding: how every array is laid out over the devices (see ``put_global_batch``).
    size: batches transferred ahead of the one being consumed.
    fields: the keys to transfer (default all); the others are left out.

  Returns:
    An iterator over ``put_global_batch``'s dicts of global ``jax.Array``s.
  """
  return DevicePrefetcher(iterator, sharding, size, fields)
