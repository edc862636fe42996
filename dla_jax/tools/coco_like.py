"""A COCO-like dataset for timing the input pipeline (no flags: the benchmarks import it).

JPEGs of COCO's sizes (640 x 480 to 1333 x 800, a quarter portrait) with a few boxes each and
their instances json, read through the COCO json source as training reads COCO.
"""

import json
import pathlib

import ml_collections
import numpy as np
from PIL import Image

# (width, height) of the COCO-like images: COCO's common sizes and its largest.
_SIZES = ((640, 480), (640, 427), (500, 375), (1333, 800))


def write_coco_like(folder: pathlib.Path, num_images: int, seed: int = 0) -> tuple[str, str]:
  """Writes JPEGs of COCO's sizes with a few boxes each, and their instances json."""
  rng = np.random.default_rng(seed)
  images, annotations = [], []
  for i in range(num_images):
    w, h = _SIZES[i % len(_SIZES)]
    if rng.random() < 0.25:  # a quarter portrait, roughly as in COCO
      w, h = h, w
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


def coco_like_config(config: ml_collections.ConfigDict, folder: pathlib.Path,
                     num_batches: int) -> ml_collections.ConfigDict:
  """``config`` training on COCO-like JPEGs written to ``folder``: enough for two warm-up
  batches and ``num_batches`` timed ones at the config's global batch, one class."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.source, config.data.num_classes = 'coco_json', 1
  config.data.train_images, config.data.train_annotations = write_coco_like(
      folder, (num_batches + 2) * config.train.global_batch)
  return config
