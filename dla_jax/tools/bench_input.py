"""Measures the input pipeline on this machine: images/s per loading setting, and the host work of
the training process per step.

  python -m dla_jax.tools.bench_input

COCO-like: JPEGs of COCO's sizes (640 x 480 to 1333 x 800, a quarter portrait) with a COCO json
(``coco_like``), written to a temporary folder and read through the COCO json path at the COCO
config's scale (1333 x 800) with flip and padding (800 x 1344), as training reads them. Shapes:
the built-in dataset at the shapes config's 128 px. Each is timed in this process with 1 and 2
threads (``data.num_workers=0``) and in 1 and 2 worker processes (``--workers``), after two
warm-up batches, so worker start-up is not counted (``timing.images_per_second``).

Host work: the main thread's CPU time per step (``time.thread_time``, so waiting for a batch
does not count) in what the training loop does each step: taking a loaded batch (hand-off),
putting it on the devices (transfer), dispatching a step (here one that only reads the batch and
returns eight scalars, as many as the train step's metrics), and adding its metrics to the sums
kept on the device between log lines.
"""

import pathlib
import tempfile

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import cli
from dla_jax import step as step_lib
from dla_jax.data import loading
from dla_jax.data import pipeline
from dla_jax.data import prefetch
from dla_jax.tools import coco_like
from dla_jax.tools import timing

_COCO_CONFIG = cli.define_config_flag('coco_config', 'dla_r50_fpn_1x_coco',
                                      'Config of the COCO-like measurement.')
_SHAPES_CONFIG = cli.define_config_flag('shapes_config', 'shapes_tiny',
                                        'Config of the shapes measurement.')
_BATCHES = flags.DEFINE_integer('batches', 12, 'Batches timed per measurement.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2'], 'Worker process counts to time.')


def host_work(config: ml_collections.ConfigDict, num_batches: int) -> dict[str, float]:
  """``timing.host_loop_ms`` of the config's training input, with a step that only reads the
  batch and returns eight scalars (as many as the train step's metrics), over all local
  devices."""
  mesh = step_lib.make_mesh()

  @jax.jit
  def read(batch):
    total = sum(jnp.sum(v[:, :1].astype(jnp.float32)) for v in batch.values())
    return {f'metric_{i}': total + i for i in range(8)}

  iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  sharding = step_lib.batch_sharding(mesh)
  parts = timing.host_loop_ms(
      lambda: next(iterator),
      lambda batch: prefetch.put_global_batch(batch, sharding, step_lib.TRAIN_FIELDS), read,
      num_batches)
  iterator.close()
  return parts


def _configs(tmp: pathlib.Path, coco_config, shapes_config, num_batches: int):
  (tmp / 'coco').mkdir()
  coco = coco_like.coco_like_config(coco_config, tmp / 'coco', num_batches)
  shapes = ml_collections.ConfigDict(shapes_config)
  shapes.data.source, shapes.data.cache_dir = 'shapes', str(tmp / 'cache')
  shapes.data.shapes_train_size = (num_batches + 2) * shapes.train.global_batch
  shapes.data.shapes_val_size = 1
  return (('COCO json, JPEG', coco), ('shapes', shapes))


def run(coco_config: ml_collections.ConfigDict, shapes_config: ml_collections.ConfigDict,
        num_batches: int, workers: list[int]) -> str:
  """The markdown tables of both measurements."""
  settings = [(0, 1), (0, 2)] + [(w, 1) for w in workers]  # (workers, threads)
  rows, host_rows = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for name, config in _configs(pathlib.Path(tmp), coco_config, shapes_config, num_batches):
      for num_workers, num_threads in settings:
        config.data.num_workers, config.data.num_threads = num_workers, num_threads
        rows.append((name, config.data.image_size, config.train.global_batch, num_workers,
                     num_threads, timing.images_per_second(config, num_batches)))
      config.data.num_workers, config.data.num_threads = max(workers), 1
      host_rows.append((name, config.train.global_batch, max(workers),
                        host_work(config, num_batches)))
  lines = ['| data | padded size | batch | workers | threads | images/s | per loading core |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  for name, (h, w), batch, num_workers, num_threads, rate in rows:
    per_core = rate / (num_workers or num_threads)
    lines.append(f'| {name} | {h}x{w} | {batch} | {num_workers} | {num_threads} | {rate:.0f} | '
                 f'{per_core:.0f} |')
  lines += ['', f'Main thread CPU ms per step, {jax.device_count()} {jax.default_backend()} '
            'device(s):', '',
            '| data | batch | workers | hand-off | transfer | dispatch | metrics | total |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for name, batch, num_workers, parts in host_rows:
    lines.append(f'| {name} | {batch} | {num_workers} | {parts["hand-off"]:.2f} | '
                 f'{parts["transfer"]:.2f} | {parts["dispatch"]:.2f} | '
                 f'{parts["metrics"]:.2f} | {sum(parts.values()):.2f} |')
  lines += ['', f'{loading.usable_cores()} cores.']
  return '\n'.join(lines)


def main(argv):
  del argv
  print(run(_COCO_CONFIG.value, _SHAPES_CONFIG.value, _BATCHES.value,
            [int(w) for w in _WORKERS.value]))


if __name__ == '__main__':
  cli.run(main)
