"""How the benchmarks time things (no flags: every tool imports it).

- ``timed``: one call's result and wall seconds (a compile, an export, an evaluation);
- ``interleaved_times`` and ``median_seconds``: repeated calls after warm-up, several contenders
  taking turns;
- ``host_loop_ms``: the training loop's main-thread CPU ms per step, by part;
- ``images_per_second``: the rate of a config's training input iterator;
- ``peak_device_bytes``: the device's peak memory, where it reports one.
"""

import collections
import statistics
import time
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dla_jax.data import pipeline

T = TypeVar('T')


def timed(call: Callable[[], T]) -> tuple[T, float]:
  """``call()``'s result and its wall seconds."""
  start = time.perf_counter()
  result = call()
  return result, time.perf_counter() - start


def interleaved_times(calls: dict[str, Callable[[], Any]], repeats: int,
                      warmup: int) -> dict[str, list[float]]:
  """Wall seconds of each call in each of ``repeats`` rounds, the calls taking turns: each round
  times every call once, in an order rotated by one per round, so that a machine whose speed
  drifts (a shared VM) slows every contender alike. Each call must wait for its own results."""
  names = list(calls)
  for _ in range(warmup):
    for name in names:
      calls[name]()
  times = {name: [] for name in names}
  for round_ in range(repeats):
    for name in names[round_ % len(names):] + names[:round_ % len(names)]:
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median_seconds(call: Callable[[], Any], repeats: int, warmup: int) -> float:
  """Median wall time of ``call()``; ``call`` must wait for its own results."""
  return statistics.median(interleaved_times({'call': call}, repeats, warmup)['call'])


def host_loop_ms(next_batch: Callable[[], dict[str, np.ndarray]], put: Callable,
                 run_step: Callable, num_steps: int) -> dict[str, float]:
  """Main-thread CPU ms per step (``time.thread_time``: waiting does not count) of what the
  training loop does each step: take a host batch (hand-off), put it on the devices (transfer),
  dispatch a step on it (dispatch, asynchronous), and add the step's metrics to sums kept on
  the device (metrics); after two untimed steps, which compile."""
  parts = collections.defaultdict(float)
  sums = None
  for i in range(num_steps + 2):
    start = time.thread_time()
    batch = next_batch()
    loaded = time.thread_time()
    on_device = put(batch)
    placed = time.thread_time()
    metrics = run_step(on_device)
    dispatched = time.thread_time()
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
    added = time.thread_time()
    if i >= 2:
      parts['hand-off'] += loaded - start
      parts['transfer'] += placed - loaded
      parts['dispatch'] += dispatched - placed
      parts['metrics'] += added - dispatched
    del batch
  jax.block_until_ready(sums)
  return {k: 1000 * v / num_steps for k, v in parts.items()}


def images_per_second(config: ml_collections.ConfigDict, num_batches: int) -> float:
  """Rate of the config's training iterator after two warm-up batches."""
  iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  for _ in range(2):
    next(iterator)
  count, seconds = timed(lambda: sum(len(next(iterator)['real']) for _ in range(num_batches)))
  iterator.close()
  return count / seconds


def peak_device_bytes() -> int | None:
  """The first local device's peak bytes in use, where it reports them (GPU), else None."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')
