"""TFDS COCO (``coco/2017`` from a ``data_dir`` the user prepared), exported once to COCO json.

Exact resume and orientation-grouped global batches need random access to examples, and
evaluation needs a COCO ground-truth json; TFDS's COCO is stored as TFRecords, which offer
neither. So the split is read once, in order, with image decoding skipped: each example's
encoded image bytes are written unchanged to ``<cache>/tfds/<name>/<split>/images/`` and its
annotations to ``annotations.json`` (boxes back from TFDS's normalised [ymin, xmin, ymax, xmax]
to pixels, crowd flags, areas and object ids kept). The result is then read like any COCO json
dataset, through the same records, transforms and batching. For COCO train this writes about
19 GB once; the export is keyed by name and split only, so delete it after re-preparing.

TensorFlow and TFDS are imported inside the functions here only: training hosts without them
can use every other source.
"""

import io
import json
import pathlib

import numpy as np
from PIL import Image

from dla_jax import errors
from dla_jax.data import cache

# COCO's category id of each of the 80 TFDS labels (TFDS numbers them in increasing id order).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)


def example_to_coco(example: dict, category_ids: np.ndarray,
                    file_name: str) -> tuple[dict, list[dict]]:
  """Converts one TFDS COCO example (numpy, image not decoded) to COCO json entries.

  Args:
    example: with 'image' (encoded bytes), 'image/id', and 'objects' holding 'bbox' [N, 4]
      normalised (ymin, xmin, ymax, xmax), 'label' [N], 'is_crowd' [N], 'area' [N], 'id' [N].
    category_ids: [C] the category id of each TFDS label.
    file_name: the image's file name in the export.

  Returns:
    The ``images`` entry and the ``annotations`` entries of the example.

  Raises:
    DataError: the image bytes are not a readable image, naming ``file_name``.
  """
  try:
    width, height = Image.open(io.BytesIO(example['image'])).size
  except OSError as e:
    raise errors.DataError(f'{file_name}: cannot read image: {e}') from e
  image_id = int(example['image/id'])
  objects = example['objects']
  ymin, xmin, ymax, xmax = np.asarray(objects['bbox'], np.float64).reshape(-1, 4).T
  annotations = []
  for i in range(len(ymin)):
    x, y = xmin[i] * width, ymin[i] * height
    w, h = (xmax[i] - xmin[i]) * width, (ymax[i] - ymin[i]) * height
    annotations.append({
        'id': int(objects['id'][i]), 'image_id': image_id,
        'category_id': int(category_ids[objects['label'][i]]),
        'bbox': [float(x), float(y), float(w), float(h)],
        'area': float(objects['area'][i]), 'iscrowd': int(objects['is_crowd'][i])})
  image = {'id': image_id, 'file_name': file_name, 'height': height, 'width': width}
  return image, annotations


def export(name: str, data_dir: str, split: str, cache_dir: str) -> tuple[str, str]:
  """Exports a prepared TFDS COCO split to images + COCO json in the cache, unless done before.

  Args:
    name: TFDS name, e.g. 'coco/2017'.
    data_dir: TFDS data folder the user prepared ('' for TFDS's default); nothing is
      downloaded.
    split: TFDS split, e.g. 'train' or 'validation'.
    cache_dir: ``data.cache_dir``.

  Returns:
    (images folder, instances json) of the export.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  path = (cache.default_root(cache_dir) / 'tfds' / name.replace('/', '_') / split)

  def build(tmp: pathlib.Path):
    builder = tfds.builder(name, data_dir=data_dir or None)
    label = builder.info.features['objects']['label']
    if name.split('/')[0] == 'coco' and label.num_classes == len(COCO_CATEGORY_IDS):
      category_ids = np.array(COCO_CATEGORY_IDS)
    else:
      category_ids = np.arange(1, label.num_classes + 1)
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={'image': tfds.decode.SkipDecoding()})
    (tmp / 'images').mkdir()
    images, annotations = [], []
    for example in tfds.as_numpy(dataset):
      file_name = example['image/filename'].decode()
      image, anns = example_to_coco(example, category_ids, file_name)
      (tmp / 'images' / file_name).write_bytes(example['image'])
      images.append(image)
      annotations.extend(anns)
    categories = [{'id': int(i), 'name': n} for i, n in zip(category_ids, label.names)]
    with open(tmp / 'annotations.json', 'w') as f:
      json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)

  cache.build_once(path, build)
  return str(path / 'images'), str(path / 'annotations.json')
