"""COCO-format datasets: an image folder and an instances json, for any dataset in that format.

The json is checked for the fields training and evaluation need, their types and repeated ids,
then indexed with pycocotools.
Training targets leave out crowd regions and boxes under 1 px (counted in one warning); the
pycocotools index keeps every annotation, crowd included, for evaluation, as COCO does.
Category ids, which need not be contiguous, map to labels 0..C-1 in increasing id order, and
``category_ids[label]`` maps back.
"""

import contextlib
import dataclasses
import io
import json
import math
import os
from typing import Any

import numpy as np
from pycocotools import coco as coco_lib

from dla_jax import errors
from dla_jax.data import image_annotations

_REQUIRED = {
    'images': ('id', 'file_name', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id', 'bbox'),
    'categories': ('id', 'name'),
}
_NUMBER = (int, float)  # json's numbers; bool, its true and false, is left out on purpose
_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # boxes become float32 training targets


@dataclasses.dataclass(frozen=True)
class CocoDataset:
  """A COCO-format dataset, read and checked.

  Attributes:
    annotations: path of the instances json.
    records: one per image, in increasing image id order.
    category_ids: [C] int64, the dataset's category id of each contiguous label.
    category_names: C names, in label order.
    coco: pycocotools index of every annotation (crowd included; no segmentations), the ground
      truth for evaluation.
    reader: reads a record's image (``image_annotations.read_file``, or a random-access source's).
  """
  annotations: str
  records: tuple[image_annotations.Record, ...]
  category_ids: np.ndarray
  category_names: tuple[str, ...]
  coco: coco_lib.COCO
  reader: image_annotations.ImageReader = image_annotations.read_file


def _check_fields(data: Any, path: str) -> None:
  if not isinstance(data, dict):
    raise errors.DataError(f'{path}: expected a json object with {sorted(_REQUIRED)}')
  for section, fields in _REQUIRED.items():
    if section not in data:
      raise errors.DataError(f'{path}: missing field "{section}"')
    if not isinstance(data[section], list):
      raise errors.DataError(f'{path}: "{section}" is not a list')
    for i, entry in enumerate(data[section]):
      if not isinstance(entry, dict):
        raise errors.DataError(f'{path}: {section}[{i}] is not a json object')
      for field in fields:
        if field not in entry:
          raise errors.DataError(f'{path}: {section}[{i}] is missing field "{field}"')


def _is_box(bbox: Any) -> bool:
  """Whether a json value is [x, y, width, height] of numbers that are finite as float32.

  NaN, Infinity, true, false, null and strings are not numbers here. Written out per
  coordinate, as it runs once per annotation.
  """
  if type(bbox) is not list or len(bbox) != 4:
    return False
  x, y, w, h = bbox
  return (type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER
          and abs(x) <= _FLOAT32_MAX and abs(y) <= _FLOAT32_MAX and abs(w) <= _FLOAT32_MAX
          and abs(h) <= _FLOAT32_MAX)


def _check_images(images: list[dict], path: str) -> set[int]:
  """Checks ids, sizes and file names; returns the image ids."""
  if not images:
    raise errors.DataError(f'{path}: has no images')
  index_of = {}
  for i, img in enumerate(images):
    image_id = img['id']
    if type(image_id) is not int or not _INT32.min <= image_id <= _INT32.max:
      raise errors.DataError(f'{path}: images[{i}] id {image_id!r} is not an integer in the '
                             'int32 range (image ids travel as int32 on device)')
    if image_id in index_of:
      raise errors.DataError(f'{path}: repeated image id {image_id} (images[{index_of[image_id]}]'
                             f' and images[{i}])')
    index_of[image_id] = i
    for side in ('height', 'width'):
      if type(img[side]) is not int or img[side] < 1:
        raise errors.DataError(f'{path}: image {image_id} {side} {img[side]!r} is not a '
                               'positive integer')
    if not isinstance(img['file_name'], str) or not img['file_name']:
      raise errors.DataError(f'{path}: image {image_id} file_name {img["file_name"]!r} is not a '
                             'non-empty string')
  return set(index_of)


def _check_categories(categories: list[dict], path: str) -> list[int]:
  """Checks the ids; returns them in increasing order, the order of the labels."""
  for i, cat in enumerate(categories):
    if type(cat['id']) is not int:
      raise errors.DataError(f'{path}: categories[{i}] id {cat["id"]!r} is not an integer')
  cat_ids = sorted(c['id'] for c in categories)
  for a, b in zip(cat_ids, cat_ids[1:]):
    if a == b:
      raise errors.DataError(f'{path}: repeated category id {a}')
  return cat_ids


def _check_annotations(anns: list[dict], path: str, image_ids: set[int],
                       cat_ids: set[int]) -> None:
  """Checks each annotation and fills in the ``iscrowd`` and ``area`` pycocotools needs.

  Annotation ids must be positive: pycocotools' evaluation stores the id of the ground truth a
  detection matched, 0 meaning none, so a match to id 0 would count as a false positive.
  Drops segmentations, which nothing here uses.
  """
  seen = set()
  for i, ann in enumerate(anns):
    ann_id = ann['id']
    if type(ann_id) is not int or ann_id < 1:
      raise errors.DataError(f'{path}: annotations[{i}] id {ann_id!r} is not a positive integer')
    if ann_id in seen:
      raise errors.DataError(f'{path}: repeated annotation id {ann_id}')
    seen.add(ann_id)
    cat_id, image_id = ann['category_id'], ann['image_id']
    if type(cat_id) is not int or cat_id not in cat_ids:
      raise errors.DataError(f'{path}: annotation {ann_id} has unknown category_id {cat_id!r:.80}')
    if type(image_id) is not int or image_id not in image_ids:
      raise errors.DataError(f'{path}: annotation {ann_id} has unknown image_id {image_id!r:.80}')
    bbox = ann['bbox']
    if not _is_box(bbox):
      raise errors.DataError(f'{path}: annotation {ann_id} bbox {bbox!r:.80} is not '
                             '[x, y, width, height] of finite numbers')
    if ann.setdefault('iscrowd', 0) not in (0, 1):
      raise errors.DataError(f'{path}: annotation {ann_id} iscrowd {ann["iscrowd"]!r:.80} is '
                             'not 0 or 1')
    if 'area' not in ann:
      ann['area'] = float(bbox[2]) * float(bbox[3])
    elif type(ann['area']) not in _NUMBER or not math.isfinite(ann['area']):
      raise errors.DataError(f'{path}: annotation {ann_id} area {ann["area"]!r:.80} is not a '
                             'finite number')
    ann.pop('segmentation', None)


def load(images_dir: str, annotations: str,
         reader: image_annotations.ImageReader = image_annotations.read_file) -> CocoDataset:
  """Reads an instances json whose ``file_name`` entries are relative to ``images_dir``.

  Annotations without ``iscrowd`` count as not crowd and those without ``area`` get the box
  area, so that pycocotools' evaluation accepts them. An image entry's ``source_index``, where
  present, is its index in the random-access source that ``reader`` reads.

  Raises:
    DataError: the json is unreadable or malformed: a required field is missing or of the wrong
      type, an id is repeated, there are no images, an annotation refers to an unknown image or
      category, or a box is not four finite numbers. The message names the json file and the
      image, category or annotation.
  """
  try:
    with open(annotations) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{annotations}: cannot read annotations: {e}') from e
  _check_fields(data, annotations)
  image_ids = _check_images(data['images'], annotations)
  cat_ids = _check_categories(data['categories'], annotations)
  _check_annotations(data['annotations'], annotations, image_ids, set(cat_ids))
  label_of = {cat_id: label for label, cat_id in enumerate(cat_ids)}
  names = {c['id']: str(c['name']) for c in data['categories']}

  coco = coco_lib.COCO()
  coco.dataset = data
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
    coco.createIndex()

  counts = image_annotations.BoxCounts()
  records = []
  for image_id in sorted(coco.imgs):
    img = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns.get(image_id, ()) if not a['iscrowd']]
    boxes, keep = image_annotations.clean_boxes(
        np.array([a['bbox'] for a in anns], np.float32), img['height'], img['width'], counts)
    labels = np.array([label_of[a['category_id']] for a in anns], np.int32)[keep]
    records.append(image_annotations.Record(
        image_id=int(image_id), path=os.path.join(images_dir, img['file_name']),
        height=int(img['height']), width=int(img['width']), boxes=boxes, labels=labels,
        source_index=int(img.get('source_index', -1))))
  if counts.degenerate or counts.outside:
    print(f'{annotations}: {counts.message()}', flush=True)
  return CocoDataset(annotations=annotations, records=tuple(records),
                     category_ids=np.array(cat_ids, np.int64),
                     category_names=tuple(names[i] for i in cat_ids), coco=coco, reader=reader)
