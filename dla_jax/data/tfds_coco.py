"""TFDS COCO (``coco/2017`` from a ``data_dir`` the user prepared), read as a COCO json dataset.

Exact resume and orientation-grouped global batches need random access to examples, and
evaluation needs a COCO ground-truth json. Two ways give both (``data.tfds_read``):

- ``'data_source'`` (the default): a split prepared as ArrayRecord is read through
  ``tfds.data_source``, with random access and without TensorFlow. Its annotations are written
  once to ``<cache>/tfds_index/<name>/<split>/annotations.json`` (the image sizes come from the
  image headers, so this pass reads the split once); each image entry keeps its index in the
  source (``source_index``), from which ``SourceImages`` reads the encoded image when a batch
  needs it.
- ``'export'``: any prepared split, TFRecord included, is read once in order with TensorFlow,
  and each example's encoded image bytes are written unchanged to
  ``<cache>/tfds/<name>/<split>/images/`` beside the same annotations json. For COCO train that
  is about 19 GB.

Either way the boxes come back from TFDS's normalised [ymin, xmin, ymax, xmax] to pixels, with
crowd flags, areas and object ids kept, and the result is read like any COCO json dataset,
through the same records, transforms and batching. What is written to the cache is keyed by name
and split only, so delete it after re-preparing a dataset.

TFDS is imported inside the functions here only: training hosts without it can use every other
source.
"""

import io
import json
import pathlib
from typing import Any

import numpy as np
from PIL import Image

from dla_jax import errors
from dla_jax.data import cache
from dla_jax.data import image_annotations

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
    category_ids = _category_ids(name, label.num_classes)
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
    _write_annotations(tmp, images, annotations, category_ids, label.names)

  cache.build_once(path, build)
  return str(path / 'images'), str(path / 'annotations.json')


def _category_ids(name: str, num_classes: int) -> np.ndarray:
  """COCO's category ids for TFDS COCO's 80 labels, else 1..C."""
  if name.split('/')[0] == 'coco' and num_classes == len(COCO_CATEGORY_IDS):
    return np.array(COCO_CATEGORY_IDS)
  return np.arange(1, num_classes + 1)


def _write_annotations(folder: pathlib.Path, images: list[dict], annotations: list[dict],
                       category_ids: np.ndarray, names: list[str]) -> None:
  categories = [{'id': int(i), 'name': n} for i, n in zip(category_ids, names)]
  with open(folder / 'annotations.json', 'w') as f:
    json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)


def data_source(name: str, data_dir: str, split: str) -> Any:
  """The random-access source of a split prepared as ArrayRecord, its images left encoded.

  Raises:
    ConfigError: the split is prepared in a format without random access (TFRecord), naming
      the command that converts it and the export fallback; or it is not prepared at all.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False,
                            decoders={'image': tfds.decode.SkipDecoding()})
  except NotImplementedError as e:  # TFDS: no random access for this file format
    folder = tfds.builder(name, data_dir=data_dir or None).data_dir
    raise errors.ConfigError(
        f'data.tfds_name: {name} in {folder} is prepared as TFRecord, which has no random '
        f'access. Convert it once with `tfds convert_format --dataset_version_dir={folder} '
        '--out_file_format=array_record` (needs apache-beam), or set '
        '--config.data.tfds_read=export to export its images to the cache (about 19 GB for '
        'COCO train)') from e
  except (AssertionError, FileNotFoundError, ValueError) as e:
    raise errors.ConfigError(f'data.tfds_name: cannot open {name} split {split!r} in '
                             f'data.tfds_data_dir {data_dir or "(TFDS default)"!r}: {e}') from e


class SourceImages:
  """The image reader of a TFDS split read through ``data_source``: decodes the encoded image
  at a record's ``source_index``, with Pillow's decompression-bomb limit at ``max_pixels``
  (``image_annotations.read_image``). Picklable: each process opens the source when it first
  reads."""

  def __init__(self, name: str, data_dir: str, split: str, max_pixels: int = 0):
    self._args = (name, data_dir, split)
    self._max_pixels = max_pixels
    self._source = None

  def __getstate__(self) -> dict:
    return {'_args': self._args, '_max_pixels': self._max_pixels, '_source': None}

  def __call__(self, record: image_annotations.Record) -> Image.Image:
    if self._source is None:
      self._source = data_source(*self._args)
    return image_annotations.read_image(record.path, f'image {record.image_id}',
                                        data=self._source[record.source_index]['image'],
                                        max_pixels=self._max_pixels)


def index(name: str, data_dir: str, split: str, cache_dir: str) -> str:
  """The annotations json of a split prepared as ArrayRecord, written once; ``SourceImages``
  reads its images.

  Takes ``export``'s arguments.

  Returns:
    The instances json; its image ``file_name`` is '<name>:<split>/<TFDS file name>' and its
    ``source_index`` the example's index.
  """
  source = data_source(name, data_dir, split)
  path = cache.default_root(cache_dir) / 'tfds_index' / name.replace('/', '_') / split

  def build(tmp: pathlib.Path):
    label = source.dataset_info.features['objects']['label']
    category_ids = _category_ids(name, label.num_classes)
    images, annotations = [], []
    for i in range(len(source)):
      example = source[i]
      file_name = f'{name}:{split}/{example["image/filename"].decode()}'
      image, anns = example_to_coco(example, category_ids, file_name)
      images.append({**image, 'source_index': i})
      annotations.extend(anns)
    _write_annotations(tmp, images, annotations, category_ids, label.names)

  cache.build_once(path, build)
  return str(path / 'annotations.json')
