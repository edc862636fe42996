"""The built-in synthetic dataset: coloured shapes on textured backgrounds, as COCO json + PNG.

Six classes: two hard-to-tell pairs (filled and outlined rectangles, filled and outlined
ellipses), triangles and crosses. Category ids are 1, 3, ..., 11, deliberately not
contiguous, so that training exercises the label mapping. Each image has 0 to 15 objects (one
in ten has none) of random colour, sized log-uniformly from 8 px to 86% of the image's short
side so that every FPN level gets objects (and every object holds a stride-8 location). Later
objects may occlude earlier ones, but every object keeps at least half of its pixels visible.
A box is the tight box of the whole object, occluded parts included: exact by construction,
where COCO's boxes enclose the visible part; with half of every object visible the two rarely
differ by much.

Everything is a function of (seed, split, image index), so the same parameters give the same
files. The dataset is written once into a cache folder and then read back by the ordinary COCO
json reader: the path the real datasets take is the path the tests and tiny runs take.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from dla_jax.data import cache

CLASSES = ('rectangle', 'rectangle outline', 'ellipse', 'ellipse outline', 'triangle', 'cross')
CATEGORY_IDS = (1, 3, 5, 7, 9, 11)
SPLITS = ('train', 'val')
_VERSION = 2  # bump when the generator changes, so that caches are rebuilt
_MAX_OBJECTS = 15
_MIN_SIZE = 8.0
_MAX_SIZE_FRACTION = 0.86
_MIN_VISIBLE = 0.5


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """[h, w, 3] float32: a colour gradient plus a blotchy low-frequency texture."""
  c0, c1 = rng.uniform(0, 255, (2, 3))
  angle = rng.uniform(0, 2 * np.pi)
  t = (np.cos(angle) * np.linspace(0, 1, w, dtype=np.float32)[None, :] +
       np.sin(angle) * np.linspace(0, 1, h, dtype=np.float32)[:, None])
  t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
  image = (c0 + t[..., None] * (c1 - c0)).astype(np.float32)
  cells = rng.integers(3, 9)
  blotches = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
  texture = np.asarray(blotches.resize((w, h), Image.Resampling.BICUBIC), np.float32) - 128
  return image + rng.uniform(0.1, 0.4) * texture


def _object_mask(rng: np.random.Generator, kind: int, h: int,
                 w: int) -> tuple[int, int, np.ndarray]:
  """One object of class ``kind`` at a random place and size in an image of ``h`` x ``w``.

  Returns:
    x, y: top-left pixel of the mask within the image.
    mask: [mh, mw] bool, the object's pixels; its tight box is the object's box.
  """
  size = np.exp(rng.uniform(np.log(_MIN_SIZE), np.log(_MAX_SIZE_FRACTION * min(h, w))))
  aspect = np.exp(rng.uniform(-np.log(2), np.log(2)))
  bw = float(np.clip(size * np.sqrt(aspect), _MIN_SIZE, w - 1))
  bh = float(np.clip(size / np.sqrt(aspect), _MIN_SIZE, h - 1))
  left, top = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
  x, y = int(left), int(top)
  x0, y0 = left - x, top - y  # drawing coordinates within the mask
  x1, y1 = x0 + bw, y0 + bh
  thickness = max(1, round(min(bw, bh) / 6))
  mask = Image.new('L', (min(int(np.ceil(x1)), w - x), min(int(np.ceil(y1)), h - y)))
  draw = ImageDraw.Draw(mask)
  name = CLASSES[kind]
  if name == 'rectangle':
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=1)
  elif name == 'rectangle outline':
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=1, width=thickness)
  elif name == 'ellipse':
    draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=1)
  elif name == 'ellipse outline':
    draw.ellipse((x0, y0, x1 - 1, y1 - 1), outline=1, width=thickness)
  elif name == 'triangle':
    apex = rng.integers(4)  # which side the apex points to: up, right, down, left
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    points = [((x0, y1), (x1, y1), (cx, y0)), ((x0, y0), (x0, y1), (x1, cy)),
              ((x0, y0), (x1, y0), (cx, y1)), ((x1, y0), (x1, y1), (x0, cy))][apex]
    draw.polygon(points, fill=1)
  else:  # cross
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(bw, bh) / 8
    draw.rectangle((x0, cy - half, x1 - 1, cy + half), fill=1)
    draw.rectangle((cx - half, y0, cx + half, y1 - 1), fill=1)
  return x, y, np.asarray(mask, bool)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
  """An RGB colour at least 80 levels away from ``background`` ([3]) in some channel."""
  for _ in range(20):
    colour = rng.uniform(0, 255, 3)
    if np.abs(colour - background).max() >= 80:
      return colour
  return 255 - background


def make_image(seed: int, split: str, index: int,
               image_hw: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
  """Renders one image.

  Args:
    seed: dataset seed.
    split: 'train' or 'val'.
    index: image index within the split.
    image_hw: (height, width) of landscape images; half the images of a non-square size are
      portrait, (width, height).

  Returns:
    image: [H, W, 3] uint8.
    objects: (class index, [x, y, width, height]) per object, in drawing order.
  """
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  h, w = image_hw
  if h != w and rng.random() < 0.5:
    h, w = w, h
  image = _background(rng, h, w)
  n = 0 if rng.random() < 0.1 else int(rng.integers(1, _MAX_OBJECTS + 1))
  owner = np.full((h, w), -1, np.int32)  # index of the object visible at each pixel
  areas, visible, objects = [], np.zeros(0, np.int64), []
  for _ in range(n):
    kind = int(rng.integers(len(CLASSES)))
    for _ in range(3):  # placements that would hide half of an earlier object are retried
      x, y, mask = _object_mask(rng, kind, h, w)
      ys, xs = np.nonzero(mask)
      if not len(ys):
        continue
      region = owner[y:y + mask.shape[0], x:x + mask.shape[1]]
      covered = region[mask]
      left = visible - np.bincount(covered[covered >= 0], minlength=len(areas))
      if np.all(left >= _MIN_VISIBLE * np.array(areas, np.int64)):
        region[mask] = len(areas)
        visible = np.append(left, len(ys))
        areas.append(len(ys))
        pixels = image[y:y + mask.shape[0], x:x + mask.shape[1]]
        pixels[mask] = _contrasting_colour(rng, pixels[mask].mean(axis=0))
        x0, y0 = float(x + xs.min()), float(y + ys.min())
        objects.append((kind, [x0, y0, x + xs.max() + 1 - x0, y + ys.max() + 1 - y0]))
        break
  image += rng.standard_normal(image.shape, np.float32) * rng.uniform(2, 12)
  return np.clip(image + 0.5, 0, 255).astype(np.uint8), objects


def write_split(directory: pathlib.Path, split: str, num_images: int, image_hw: tuple[int, int],
                seed: int, num_threads: int = 4) -> None:
  """Writes ``directory/split/*.png`` and ``directory/annotations/instances_{split}.json``."""
  (directory / split).mkdir(parents=True)
  (directory / 'annotations').mkdir(exist_ok=True)

  def render(index):
    image, objects = make_image(seed, split, index, image_hw)
    file_name = f'{index:06d}.png'
    Image.fromarray(image).save(directory / split / file_name, compress_level=1)
    return file_name, image.shape, objects

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    rendered = list(pool.map(render, range(num_images)))
  images, annotations = [], []
  for index, (file_name, (h, w, _), objects) in enumerate(rendered):
    images.append({'id': index + 1, 'file_name': file_name, 'height': h, 'width': w})
    for kind, bbox in objects:
      annotations.append({'id': len(annotations) + 1, 'image_id': index + 1,
                          'category_id': CATEGORY_IDS[kind], 'bbox': bbox,
                          'area': bbox[2] * bbox[3], 'iscrowd': 0})
  categories = [{'id': i, 'name': name} for i, name in zip(CATEGORY_IDS, CLASSES)]
  with open(directory / 'annotations' / f'instances_{split}.json', 'w') as f:
    json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)


def ensure_dataset(cache_dir: str, image_hw: tuple[int, int], num_train: int, num_val: int,
                   seed: int) -> dict[str, tuple[str, str]]:
  """Generates the dataset into the cache unless there already, and says where it is.

  Args:
    cache_dir: ``data.cache_dir``; the dataset goes to ``<cache>/shapes/<parameter hash>``.
    image_hw: (height, width) of landscape images.
    num_train: number of training images.
    num_val: number of validation images.
    seed: dataset seed.

  Returns:
    split -> (images folder, instances json), for 'train' and 'val'.
  """
  params = {'version': _VERSION, 'image_hw': list(image_hw), 'train': num_train,
            'val': num_val, 'seed': seed}
  digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  path = cache.default_root(cache_dir) / 'shapes' / digest

  def build(tmp):
    for split, num in zip(SPLITS, (num_train, num_val)):
      write_split(tmp, split, num, tuple(image_hw), seed, num_threads=os.cpu_count() or 1)

  path = cache.build_once(path, build)
  return {split: (str(path / split), str(path / 'annotations' / f'instances_{split}.json'))
          for split in SPLITS}
