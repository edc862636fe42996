"""Synthetic shapes: deterministic, varied, cached atomically, and read back as COCO json."""

import json
import os

import numpy as np
import pytest

from dla_jax.configs import shapes_tiny
from dla_jax.data import cache
from dla_jax.data import coco_json
from dla_jax.data import pipeline
from dla_jax.data import shapes


def _config(cache_dir, **data):
  config = shapes_tiny.get_config()
  d = config.data
  d.source, d.cache_dir, d.shapes_seed = 'shapes', str(cache_dir), 0
  d.shapes_train_size, d.shapes_val_size = 48, 20
  d.scale, d.short_side_range, d.flip_prob, d.num_threads = (128, 128), (96, 128), 0.5, 2
  for key, value in data.items():
    setattr(d, key, value)
  return config


@pytest.fixture(name='files', scope='module')
def _files(tmp_path_factory):
  return shapes.ensure_dataset(str(tmp_path_factory.mktemp('cache')), (128, 128), 300, 20, 0)


def test_images_are_a_function_of_seed_split_and_index():
  a_image, a_objects = shapes.make_image(0, 'train', 5, (128, 128))
  b_image, b_objects = shapes.make_image(0, 'train', 5, (128, 128))
  np.testing.assert_array_equal(a_image, b_image)
  assert a_objects == b_objects
  assert not np.array_equal(a_image, shapes.make_image(1, 'train', 5, (128, 128))[0])
  assert not np.array_equal(a_image, shapes.make_image(0, 'val', 5, (128, 128))[0])


def test_dataset_has_every_class_sizes_for_every_level_and_empty_images(files):
  with open(files['train'][1]) as f:
    data = json.load(f)
  assert [c['id'] for c in data['categories']] == [1, 3, 5, 7, 9, 11]
  boxes = np.array([a['bbox'] for a in data['annotations']])
  assert set(a['category_id'] for a in data['annotations']) == {1, 3, 5, 7, 9, 11}
  assert boxes[:, 2:].min() >= 4 and np.sqrt(boxes[:, 2] * boxes[:, 3]).max() > 90
  assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 128).all()
  per_image = np.bincount([a['image_id'] for a in data['annotations']], minlength=301)[1:]
  assert (per_image == 0).any() and per_image.max() <= 15 and per_image.mean() > 5


def test_dataset_is_generated_once_and_reused(tmp_path):
  files = shapes.ensure_dataset(str(tmp_path), (64, 64), 3, 2, 0)
  stamp = os.stat(files['train'][1]).st_mtime_ns
  assert shapes.ensure_dataset(str(tmp_path), (64, 64), 3, 2, 0) == files
  assert os.stat(files['train'][1]).st_mtime_ns == stamp
  assert shapes.ensure_dataset(str(tmp_path), (64, 64), 3, 2, 1)['train'] != files['train']
  assert len(os.listdir(tmp_path / 'shapes')) == 2


def test_interrupted_build_leaves_no_dataset_behind(tmp_path):
  def build(folder):
    (folder / 'half.png').write_bytes(b'')
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.build_once(tmp_path / 'data', build)
  assert os.listdir(tmp_path) == []


def test_shapes_read_back_as_coco_with_a_non_contiguous_label_mapping(files):
  dataset = coco_json.load(*files['val'])
  assert len(dataset.records) == 20
  np.testing.assert_array_equal(dataset.category_ids, [1, 3, 5, 7, 9, 11])
  assert dataset.category_names[1] == 'rectangle outline'


def test_shapes_source_gives_fixed_shape_batches_of_the_config(tmp_path):
  config = _config(tmp_path)
  iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  batch = next(iterator)
  iterator.close()
  assert batch['images'].shape == (16, 128, 128, 3) and batch['boxes'].shape == (16, 20, 4)
  assert batch['valid'].any() and batch['real'].all()
  assert (batch['image_hw'] >= 96).all() and (batch['image_hw'] <= 128).all()
  eval_iterator, dataset = pipeline.make_eval_iterator(config, global_batch=8)
  batches = list(eval_iterator)
  assert sum(b['real'].sum() for b in batches) == 20 and len(batches) == 3
  assert (batches[0]['image_hw'] == 128).all()
  assert len(dataset.category_ids) == config.data.num_classes


def test_non_square_size_makes_landscape_and_portrait_images(tmp_path):
  config = _config(tmp_path, image_size=(96, 128), scale=(128, 96), short_side_range=(96, 96))
  iterator, _ = pipeline.make_eval_iterator(config, global_batch=4)
  shapes_seen = {b['images'].shape[1:3] for b in iterator}
  assert shapes_seen == {(96, 128), (128, 96)}


def test_class_count_other_than_the_config_is_refused(tmp_path):
  with pytest.raises(ValueError, match='data.num_classes is 5 .* 6 categories'):
    pipeline.load_dataset(_config(tmp_path, num_classes=5), 'val')
