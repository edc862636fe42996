"""Measures the input pipeline's images/s on this machine: COCO-like JPEGs and synthetic shapes.

  python -m dla_jax.tools.bench_input

COCO-like: 640 x 480 JPEGs (COCO's typical size) with a COCO json, written to a temporary
folder, read through the COCO json path at the COCO config's scale (1333 x 800) with flip and
padding, as training reads them. Shapes: the built-in dataset at the shapes config's 128 px.
Each is timed with one loading thread and with one per core, and the table ends with the rate
each core must sustain to keep one GPU fed.
"""

import json
import os
import pathlib
import tempfile
import time

from absl import flags
import ml_collections
import numpy as np
from PIL import Image

from dla_jax import cli
from dla_jax.data import batching
from dla_jax.data import pipeline

_COCO_CONFIG = cli.define_config_flag('coco_config', 'dla_r50_fpn_1x_coco',
                                      'Config of the COCO-like measurement.')
_SHAPES_CONFIG = cli.define_config_flag('shapes_config', 'shapes_tiny',
                                        'Config of the shapes measurement.')
_BATCHES = flags.DEFINE_integer('batches', 12, 'Batches timed per measurement.')
_GPU_RATE = flags.DEFINE_float('gpu_rate', 150.0, 'Training images/s of one GPU to feed.')


def write_coco_like(folder: pathlib.Path, num_images: int, seed: int = 0) -> tuple[str, str]:
  """Writes 640 x 480 JPEGs with a few boxes each and their instances json."""
  rng = np.random.default_rng(seed)
  images, annotations = [], []
  for i in range(num_images):
    h, w = (480, 640) if i % 4 else (640, 480)  # a quarter portrait, roughly as in COCO
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).resize((w, h))
    pixels = np.asarray(smooth, np.float32) + rng.normal(0, 20, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        folder / f'{i:06d}.jpg', quality=90)
    images.append({'id': i + 1, 'file_name': f'{i:06d}.jpg', 'height': h, 'width': w})
    for _ in range(7):
      x, y = rng.uniform(0, w - 50), rng.uniform(0, h - 50)
      annotations.append({'id': len(annotations) + 1, 'image_id': i + 1, 'category_id': 1,
                          'bbox': [x, y, rng.uniform(5, w - x), rng.uniform(5, h - y)]})
  path = folder / 'instances.json'
  path.write_text(json.dumps({'images': images, 'annotations': annotations,
                              'categories': [{'id': 1, 'name': 'thing'}]}))
  return str(folder), str(path)


def images_per_second(iterator: batching.TrainIterator, num_batches: int) -> float:
  """Rate of the iterator after two warm-up batches."""
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  count = sum(len(next(iterator)['real']) for _ in range(num_batches))
  rate = count / (time.perf_counter() - start)
  iterator.close()
  return rate


def measure(config: ml_collections.ConfigDict, num_batches: int) -> dict[int, float]:
  """images/s of one process's training iterator, per number of loading threads."""
  cores = os.cpu_count() or 1
  rates = {}
  for threads in sorted({1, cores}):
    config.data.num_threads = threads
    iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    rates[threads] = images_per_second(iterator, num_batches)
  return rates


def run(coco_config: ml_collections.ConfigDict, shapes_config: ml_collections.ConfigDict,
        num_batches: int, gpu_rate: float) -> str:
  """The markdown table of both measurements, and the per-core rate one GPU needs."""
  cores = os.cpu_count() or 1
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    coco = ml_collections.ConfigDict(coco_config)
    (tmp / 'coco').mkdir()
    coco.data.source, coco.data.num_classes = 'coco_json', 1
    coco.data.train_images, coco.data.train_annotations = write_coco_like(
        tmp / 'coco', (num_batches + 2) * coco.train.global_batch)
    shapes = ml_collections.ConfigDict(shapes_config)
    shapes.data.source, shapes.data.cache_dir = 'shapes', str(tmp / 'cache')
    shapes.data.shapes_train_size = (num_batches + 2) * shapes.train.global_batch
    shapes.data.shapes_val_size = 1
    for name, config in (('COCO json, 640x480 JPEG', coco), ('shapes', shapes)):
      for threads, rate in measure(config, num_batches).items():
        rows.append((name, config.data.image_size, config.train.global_batch, threads, rate))
  single = rows[0][-1]
  lines = ['| data | padded size | batch | threads | images/s | images/s per thread |',
           '| --- | --- | --- | --- | --- | --- |']
  for name, (h, w), batch, threads, rate in rows:
    lines.append(f'| {name} | {h}x{w} | {batch} | {threads} | {rate:.0f} | '
                 f'{rate / threads:.0f} |')
  lines += ['', f'{cores} cores here. Feeding one GPU at {gpu_rate:.0f} images/s with the COCO '
            f'path takes {gpu_rate / cores:.1f} images/s from each of the {cores} cores, or '
            f'{gpu_rate / single:.1f} cores at the measured single-thread rate of {single:.0f} '
            'images/s.']
  return '\n'.join(lines)


def main(argv):
  del argv
  print(run(_COCO_CONFIG.value, _SHAPES_CONFIG.value, _BATCHES.value, _GPU_RATE.value))


if __name__ == '__main__':
  cli.run(main)
