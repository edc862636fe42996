"""Times the batched assigner at COCO scale and prints a markdown table.

Batch 16 at 800x1344 (P3-P7 priors from ``make_priors``), 100 real GTs
per image and 80 classes, for DLA and ATSS. The time is the median of several calls after a
warm-up; the memory is XLA's own account of the compiled program (temporaries, and arguments
plus outputs), and on accelerators that report it the device's peak bytes in use.

  python -m dla_jax.tools.bench_assign [--batch 16] [--repeats 10]
"""

import argparse
import functools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dla_jax import assign as assign_lib
from dla_jax.priors import make_priors

IMAGE_HW = (800, 1344)
STRIDES = (8, 16, 32, 64, 128)
ANCHOR_SCALE = 8.0
MAX_BOXES = 100
NUM_CLASSES = 80
TOPK = 10


def _inputs(batch: int, priors, seed: int = 0):
  """Random GTs [B, 100, 4] inside the image, probabilities [B, N, 80], predictions [B, N, 4]."""
  rng = np.random.default_rng(seed)
  h, w = IMAGE_HW
  n = len(priors.centers)
  wh = rng.uniform(8, 400, (batch, MAX_BOXES, 2))
  xy = rng.uniform(0, 1, (batch, MAX_BOXES, 2)) * ((w, h) - wh)
  boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, (batch, MAX_BOXES)).astype(np.int32)
  valid = np.ones((batch, MAX_BOXES), bool)
  probs = rng.uniform(0, 1, (batch, n, NUM_CLASSES)).astype(np.float32)
  pred = (priors.anchors + rng.normal(0, 4, (batch, n, 4))).astype(np.float32)
  return [jnp.asarray(x) for x in (boxes, labels, valid, probs, pred)]


def _mib(num_bytes) -> str:
  return f'{num_bytes / 2**20:.1f}'


def bench(name: str, batch: int, repeats: int) -> dict:
  """Compiles and times ``assign_batch`` for one assigner; returns a row of the table."""
  priors = make_priors(IMAGE_HW, STRIDES, ANCHOR_SCALE)
  fn = jax.jit(functools.partial(
      assign_lib.assign_batch, level_sizes=priors.level_sizes, topk=TOPK, gamma=1.0,
      num_classes=NUM_CLASSES, name=name))
  args = (jnp.asarray(priors.anchors), jnp.asarray(priors.centers), *_inputs(batch, priors),
          jnp.float32(0.95))
  compiled = fn.lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  memory = compiled.memory_analysis()
  stats = jax.devices()[0].memory_stats() or {}
  return dict(
      assigner=name,
      priors=len(priors.centers),
      ms=f'{1e3 * statistics.median(times):.1f}',
      temp=_mib(memory.temp_size_in_bytes) if memory else 'n/a',
      io=_mib(memory.argument_size_in_bytes + memory.output_size_in_bytes) if memory else 'n/a',
      peak=_mib(stats['peak_bytes_in_use']) if 'peak_bytes_in_use' in stats else 'n/a')


def machine() -> str:
  device = jax.devices()[0]
  return (f'{device.platform} / {device.device_kind}, {platform.processor() or platform.machine()}'
          f', {os.cpu_count()} CPU cores, jax {jax.__version__}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  rows = [bench(name, args.batch, args.repeats) for name in assign_lib.ASSIGNERS]
  print(f'Assigner, batch {args.batch} at {IMAGE_HW[0]}x{IMAGE_HW[1]}, {MAX_BOXES} GTs per '
        f'image, {NUM_CLASSES} classes, top-{TOPK}; median of {args.repeats} calls.')
  print(f'Machine: {machine()}\n')
  print('| assigner | priors N | time / call (ms) | XLA temp (MiB) | args + outputs (MiB) '
        '| device peak (MiB) |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['assigner']} | {r['priors']} | {r['ms']} | {r['temp']} | {r['io']} "
          f"| {r['peak']} |")


if __name__ == '__main__':
  main()
