"""The input pipeline of a config: the source, read as COCO json, then batched.

``data.source`` picks where images come from: 'shapes' (the built-in synthetic data, generated
into the cache on first use), 'coco_json' (an image folder and an instances json) or 'tfds'
(a prepared TFDS COCO, read through ``tfds.data_source`` or exported to the cache once). All
three end up as a COCO json dataset, so the records, transforms and batching are the same code.
"""

import os

import jax
import ml_collections
import numpy as np

from dla_jax import errors
from dla_jax.data import batching
from dla_jax.data import coco_json
from dla_jax.data import image_annotations
from dla_jax.data import shapes
from dla_jax.data import tfds_coco

SPLITS = ('train', 'val')


def data_path(config: ml_collections.ConfigDict, field: str) -> str:
  """``data.<field>`` as an absolute path: a relative one is relative to ``data.root``, and a
  relative ``data.root`` to the working directory; '' stays ''."""
  value = os.path.expanduser(config.data[field])
  if not value or os.path.isabs(value):
    return value
  return os.path.join(os.path.abspath(os.path.expanduser(config.data.root)), value)


def _existing(config: ml_collections.ConfigDict, field: str, folder: bool) -> str:
  """``data_path(config, field)``, checked to be an existing folder (or file).

  Raises:
    ConfigError: naming the field, the path it resolved to, and how it was resolved.
  """
  path = data_path(config, field)
  if os.path.isdir(path) if folder else os.path.isfile(path):
    return path
  how, value, root = '', config.data[field], config.data.root
  if not os.path.isabs(os.path.expanduser(value)):
    how = f' (data.{field} {value!r} under data.root {root!r}'
    if not os.path.isabs(os.path.expanduser(root)):
      how += f', itself under the working directory {os.getcwd()}'
    how += ')'
  raise errors.ConfigError(f'data.{field}: no {"folder" if folder else "file"} {path}{how}; '
                           f'set --config.data.root or --config.data.{field}')


def _tfds_split(config: ml_collections.ConfigDict, split: str) -> str:
  return config.data.tfds_train_split if split == 'train' else config.data.tfds_val_split


def dataset_files(config: ml_collections.ConfigDict, split: str) -> tuple[str, str]:
  """(images folder, instances json) of a split, generating or exporting it if needed; a TFDS
  split read through ``data_source`` has no images folder ('').

  Raises:
    ConfigError: the coco_json source's folder or json does not exist (naming the field).
  """
  data = config.data
  if split not in SPLITS:
    raise ValueError(f'split: expected one of {SPLITS}, got {split!r}')
  if data.source == 'shapes':
    return shapes.ensure_dataset(data.cache_dir, tuple(data.image_size), data.shapes_train_size,
                                 data.shapes_val_size, data.shapes_seed)[split]
  if data.source == 'coco_json':
    return (_existing(config, f'{split}_images', folder=True),
            _existing(config, f'{split}_annotations', folder=False))
  args = (data.tfds_name, data_path(config, 'tfds_data_dir'), _tfds_split(config, split),
          data.cache_dir)  # data.source 'tfds'
  if data.tfds_read == 'data_source':
    return '', tfds_coco.index(*args)
  return tfds_coco.export(*args)


def load_dataset(config: ml_collections.ConfigDict, split: str) -> coco_json.CocoDataset:
  """The dataset of a split, checked against ``data.num_classes``.

  Its ``category_ids[label]`` maps predicted labels back to the dataset's category ids and its
  ``coco`` is the ground truth for evaluation.
  """
  data = config.data
  images, annotations = dataset_files(config, split)
  reader = image_annotations.FileReader(data.max_image_pixels)
  if data.source == 'tfds' and data.tfds_read == 'data_source':
    reader = tfds_coco.SourceImages(data.tfds_name, data_path(config, 'tfds_data_dir'),
                                    _tfds_split(config, split), data.max_image_pixels)
  dataset = coco_json.load(images, annotations, reader)
  if len(dataset.category_ids) != config.data.num_classes:
    raise errors.ConfigError(f'data.num_classes is {config.data.num_classes} but '
                     f'{dataset.annotations} has {len(dataset.category_ids)} categories')
  return dataset


def _warn_dropped_boxes(dataset: coco_json.CocoDataset, max_boxes: int) -> None:
  counts = np.array([len(r.labels) for r in dataset.records])
  over = counts > max_boxes
  if over.any():
    print(f'{dataset.annotations}: {over.sum()} images have more than data.max_boxes='
          f'{max_boxes} boxes; the largest are kept and {(counts[over] - max_boxes).sum()} boxes '
          'are dropped', flush=True)


def train_records(config: ml_collections.ConfigDict,
                  dataset: coco_json.CocoDataset) -> list:
  """The records training draws from. With ``data.filter_empty_gt``, images without any
  annotation (crowd ones count) are left out, as MMDetection v2's ``CocoDataset._filter_imgs``
  does for training (``filter_empty_gt=True``); evaluation always keeps every image.

  Raises:
    DataError: naming the annotations file, when no image is left to train on.
  """
  if not config.data.filter_empty_gt:
    return list(dataset.records)
  kept = [r for r in dataset.records if dataset.coco.imgToAnns.get(r.image_id)]
  if not kept:
    raise errors.DataError(f'{dataset.annotations}: no image has an annotation, so none is left '
                           'to train on (data.filter_empty_gt=True skips images without one)')
  if len(kept) < len(dataset.records):
    print(f'{dataset.annotations}: training skips {len(dataset.records) - len(kept)} of '
          f'{len(dataset.records)} images that have no annotation (data.filter_empty_gt)',
          flush=True)
  return kept


def make_train_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                        process_count: int | None = None) -> batching.TrainIterator:
  """Endless, resumable training batches of this process (see ``batching`` for the contract).

  Args:
    config: reads ``data.*``, ``train.global_batch`` and ``train.seed``.
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
  """
  dataset = load_dataset(config, 'train')
  _warn_dropped_boxes(dataset, config.data.max_boxes)
  return batching.TrainIterator(
      train_records(config, dataset), image_size=config.data.image_size,
      max_boxes=config.data.max_boxes, global_batch=config.train.global_batch,
      seed=config.train.seed, scale=config.data.scale,
      short_side_range=config.data.short_side_range, flip_prob=config.data.flip_prob,
      reader=dataset.reader,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=config.data.num_workers, num_threads=config.data.num_threads)


def make_eval_iterator(config: ml_collections.ConfigDict, split: str = 'val', *,
                       global_batch: int | None = None, process_index: int | None = None,
                       process_count: int | None = None
                       ) -> tuple[batching.EvalIterator, coco_json.CocoDataset]:
  """One pass over a split at ``data.scale``, unflipped, every image once, and its dataset.

  The dataset's ``category_ids`` maps labels back to category ids and its ``coco`` is the
  ground truth for evaluation.

  Args:
    config: reads ``data.*`` and ``train.global_batch``.
    split: 'val' or 'train'.
    global_batch: examples per global batch (default ``train.global_batch``).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
  """
  dataset = load_dataset(config, split)
  iterator = batching.EvalIterator(
      dataset.records, image_size=config.data.image_size, max_boxes=config.data.max_boxes,
      global_batch=global_batch or config.train.global_batch, scale=config.data.scale,
      reader=dataset.reader,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=config.data.num_workers, num_threads=config.data.num_threads)
  return iterator, dataset
