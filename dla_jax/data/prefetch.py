"""Moves host batches onto the devices a few steps ahead of the training loop."""

import collections
import itertools
from typing import Any, Iterator, Sequence

import jax
import numpy as np


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

  def _put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self._sharding, batch[k])
            for k in self._fields or batch}

  def __iter__(self) -> 'DevicePrefetcher':
    return self

  def __next__(self) -> dict[str, jax.Array]:
    for batch in itertools.islice(self._iterator, self._size + 1 - len(self._queue)):
      self._queue.append((self._put(batch), self._host_state()))
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self) -> Any:
    """The host iterator's state just after the last batch yielded here."""
    return self._state


def prefetch_to_device(iterator: Iterator[dict[str, np.ndarray]], sharding: jax.sharding.Sharding,
                       size: int = 2, fields: Sequence[str] | None = None) -> DevicePrefetcher:
  """Puts each host batch onto the devices, ``size`` batches ahead of the consumer.

  Args:
    iterator: yields dicts of numpy arrays with this process's slice of the global batch as the
      leading dimension.
    sharding: how every array is laid out over the devices, e.g. ``NamedSharding(mesh,
      P('data'))``; each process contributes its local slice
      (``jax.make_array_from_process_local_data``), so this also works across hosts.
    size: batches transferred ahead of the one being consumed.
    fields: the keys to transfer (default all); the others stay on the host.

  Returns:
    An iterator over dicts of global ``jax.Array``s; integer dtypes follow JAX's x64 setting
    (``image_id`` arrives as int32 unless x64 is enabled).
  """
  return DevicePrefetcher(iterator, sharding, size, fields)
