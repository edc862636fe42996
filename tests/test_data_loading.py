"""Loading ahead in worker processes: position order from any start, the automatic worker count,
and errors raised in a worker reaching the caller."""

import numpy as np
import pytest

from dla_jax import errors
from dla_jax.data import loading


class _Positions:
  """A batch source whose batch at position p holds p (picklable: workers import this module)."""

  def __init__(self, fail_at: int = -1):
    self._fail_at = fail_at

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    if position == self._fail_at:
      raise errors.DataError(f'image{position}.jpg: cannot read image {position}')
    return {'position': np.full((2, 3), position, np.int64)}


@pytest.mark.parametrize('workers,threads', [(0, 0), (0, 3), (3, 2)])
def test_stream_yields_every_position_in_order_from_any_start(workers, threads):
  stream = loading.stream(_Positions(), 5, 16, num_workers=workers, num_threads=threads)
  positions = [int(b['position'][0, 0]) for b in stream]
  stream.close()
  assert positions == list(range(5, 16))


def test_an_endless_stream_goes_past_any_epoch():
  stream = loading.stream(_Positions(), 7, num_workers=2, num_threads=1)
  positions = [int(next(stream)['position'][0, 0]) for _ in range(9)]
  stream.close()
  assert positions == list(range(7, 16))


def test_an_error_in_a_worker_reaches_the_caller_after_the_batches_before_it():
  stream = loading.stream(_Positions(fail_at=4), 0, 10, num_workers=2, num_threads=1)
  assert [int(next(stream)['position'][0, 0]) for _ in range(4)] == [0, 1, 2, 3]
  with pytest.raises(errors.DataError, match='image4.jpg: cannot read image 4'):
    next(stream)
  stream.close()


@pytest.mark.parametrize('cores,workers', [(1, 1), (2, 1), (16, 14), (96, 32)])
def test_automatic_workers_leave_two_cores_to_the_training_process(monkeypatch, cores, workers):
  monkeypatch.setattr(loading, 'usable_cores', lambda: cores)
  assert loading.resolve_workers(-1) == workers
  assert loading.resolve_workers(3) == 3

