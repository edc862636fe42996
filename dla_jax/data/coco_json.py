"""COCO-format datasets: an image folder and an instances json, for any dataset in that format.

The json is checked for the fields training and evaluation need, then indexed with pycocotools.
Training targets leave out crowd regions and boxes under 1 px (counted in one warning); the
pycocotools index keeps every annotation, crowd included, for evaluation, as COCO does.
Category ids, which need not be contiguous, map to labels 0..C-1 in increasing id order, and
``category_ids[label]`` maps back.
"""

import contextlib
import dataclasses
import io
import json
import os

from absl import logging
import numpy as np
from pycocotools import coco as coco_lib

from dla_jax.data import records as records_lib

_REQUIRED = {
    'images': ('id', 'file_name', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id', 'bbox'),
    'categories': ('id', 'name'),
}


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
  """
  annotations: str
  records: tuple[records_lib.Record, ...]
  category_ids: np.ndarray
  category_names: tuple[str, ...]
  coco: coco_lib.COCO


def _check_fields(data: dict, path: str) -> None:
  if not isinstance(data, dict):
    raise records_lib.DataError(f'{path}: expected a json object with {sorted(_REQUIRED)}')
  for section, fields in _REQUIRED.items():
    if section not in data:
      raise records_lib.DataError(f'{path}: missing field "{section}"')
    for i, entry in enumerate(data[section]):
      for field in fields:
        if field not in entry:
          raise records_lib.DataError(f'{path}: {section}[{i}] is missing field "{field}"')


def load(images_dir: str, annotations: str) -> CocoDataset:
  """Reads an instances json whose ``file_name`` entries are relative to ``images_dir``.

  Annotations without ``iscrowd`` count as not crowd and those without ``area`` get the box
  area, so that pycocotools' evaluation accepts them.

  Raises:
    DataError: the json is unreadable, lacks a required field, or refers to an unknown image or
      category; the message names the json file.
  """
  try:
    with open(annotations) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise records_lib.DataError(f'{annotations}: cannot read annotations: {e}') from e
  _check_fields(data, annotations)

  cat_ids = sorted(c['id'] for c in data['categories'])
  if len(set(cat_ids)) != len(cat_ids):
    raise records_lib.DataError(f'{annotations}: repeated category ids')
  label_of = {cat_id: label for label, cat_id in enumerate(cat_ids)}
  names = {c['id']: str(c['name']) for c in data['categories']}
  image_ids = {img['id'] for img in data['images']}
  for ann in data['annotations']:
    if ann['category_id'] not in label_of:
      raise records_lib.DataError(f'{annotations}: annotation {ann["id"]} has unknown '
                                  f'category_id {ann["category_id"]}')
    if ann['image_id'] not in image_ids:
      raise records_lib.DataError(f'{annotations}: annotation {ann["id"]} has unknown '
                                  f'image_id {ann["image_id"]}')
    if len(ann['bbox']) != 4:
      raise records_lib.DataError(f'{annotations}: annotation {ann["id"]} bbox is not '
                                  '[x, y, width, height]')
    ann.pop('segmentation', None)
    ann.setdefault('iscrowd', 0)
    ann.setdefault('area', float(ann['bbox'][2]) * float(ann['bbox'][3]))

  coco = coco_lib.COCO()
  coco.dataset = data
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
    coco.createIndex()

  counts = records_lib.BoxCounts()
  records = []
  for image_id in sorted(coco.imgs):
    img = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns.get(image_id, ()) if not a['iscrowd']]
    boxes, keep = records_lib.clean_boxes(
        np.array([a['bbox'] for a in anns], np.float32), img['height'], img['width'], counts)
    labels = np.array([label_of[a['category_id']] for a in anns], np.int32)[keep]
    records.append(records_lib.Record(
        image_id=int(image_id), path=os.path.join(images_dir, img['file_name']),
        height=int(img['height']), width=int(img['width']), boxes=boxes, labels=labels))
  if counts.degenerate or counts.outside:
    logging.warning('%s: %s', annotations, counts.message())
  return CocoDataset(annotations=annotations, records=tuple(records),
                     category_ids=np.array(cat_ids, np.int64),
                     category_names=tuple(names[i] for i in cat_ids), coco=coco)
