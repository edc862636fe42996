"""TFDS COCO source: examples exported to COCO json, read back in pixels, with TFDS's mock data.

Nothing is downloaded: ``tfds.testing.mock_data`` replaces the prepared files, and its manual
mode (``as_dataset_fn``) serves well-formed COCO examples, encoded and decoded by TFDS's own
features, so that ``SkipDecoding`` hands over real image bytes as it does on a prepared dataset.

TensorFlow is imported by the fixture, not at collection: imported before torchvision (which
test_pretrained imports), its libraries crash torchvision's triton import.
"""

import functools
import json

import numpy as np
import pytest

from dla_jax.configs import shapes_tiny
from dla_jax.data import coco_json
from dla_jax.data import pipeline
from dla_jax.data import tfds_coco


def _examples():
  """Two images: one landscape with a crowd object, one portrait without objects."""
  landscape = np.zeros((40, 60, 3), np.uint8)
  landscape[10:30, 6:30] = 255  # the object at x 6..30, y 10..30
  return [
      {'image': landscape, 'image/filename': '000000000007.jpg', 'image/id': 7,
       'objects': {'bbox': np.array([[10 / 40, 6 / 60, 30 / 40, 30 / 60],
                                     [0.0, 0.5, 0.5, 1.0]], np.float32),
                   'label': np.array([2, 79]), 'is_crowd': np.array([False, True]),
                   'area': np.array([480, 900]), 'id': np.array([70, 71])}},
      {'image': np.full((50, 30, 3), 128, np.uint8), 'image/filename': '000000000009.jpg',
       'image/id': 9,
       'objects': {'bbox': np.zeros((0, 4), np.float32), 'label': np.zeros(0, np.int64),
                   'is_crowd': np.zeros(0, bool), 'area': np.zeros(0, np.int64),
                   'id': np.zeros(0, np.int64)}},
  ]


def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  """What a prepared dataset gives: examples encoded by TFDS, then decoded with ``decoders``."""
  del split, read_config, shuffle_files
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = self.info.features
  encoded = [features.encode_example(ex) for ex in _examples()]
  specs = features.get_serialized_info()
  ds = tf.data.Dataset.from_generator(
      lambda: iter(encoded), output_types=tf.nest.map_structure(lambda t: t.dtype, specs),
      output_shapes=tf.nest.map_structure(lambda t: t.shape, specs))
  return ds.map(functools.partial(features.decode_example, decoders=decoders))


@pytest.fixture(name='mock_coco')
def _mock_coco():
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_as_dataset):
    yield


def test_export_gives_pixel_boxes_coco_category_ids_and_the_original_image_bytes(
    mock_coco, tmp_path):
  del mock_coco
  images, annotations = tfds_coco.export('coco/2017', '', 'validation', str(tmp_path))
  with open(annotations) as f:
    data = json.load(f)
  assert [(i['id'], i['width'], i['height']) for i in data['images']] == [(7, 60, 40), (9, 30, 50)]
  obj, crowd = data['annotations']
  np.testing.assert_allclose(obj['bbox'], [6, 10, 24, 20], atol=1e-4)
  assert (obj['category_id'], obj['iscrowd'], obj['id']) == (3, 0, 70)
  assert (crowd['category_id'], crowd['iscrowd']) == (90, 1)  # label 79 is COCO's id 90
  assert len(data['categories']) == 80

  dataset = coco_json.load(images, annotations)
  first, second = dataset.records
  np.testing.assert_allclose(first.boxes, [[6, 10, 30, 30]], atol=1e-4)  # crowd left out
  assert len(second.boxes) == 0
  np.testing.assert_array_equal(dataset.category_ids[first.labels], [3])


def test_tfds_source_batches_like_any_coco_dataset(mock_coco, tmp_path):
  del mock_coco
  config = shapes_tiny.get_config()
  data = config.data
  data.source, data.num_classes, data.max_boxes = 'tfds', 80, 4
  data.tfds_name, data.tfds_data_dir = 'coco/2017', ''
  data.tfds_train_split, data.tfds_val_split = 'train', 'validation'
  data.cache_dir = str(tmp_path)
  data.scale, data.short_side_range, data.flip_prob, data.num_threads = (120, 80), (80, 80), 0., 1
  data.image_size = (96, 128)
  iterator, dataset = pipeline.make_eval_iterator(config, global_batch=1)
  landscape, portrait = list(iterator)
  assert landscape['images'].shape == (1, 96, 128, 3)
  assert portrait['images'].shape == (1, 128, 96, 3)
  np.testing.assert_array_equal(landscape['image_hw'], [[80, 120]])
  np.testing.assert_allclose(landscape['boxes'][0, 0], [12, 20, 60, 60], atol=1e-3)
  np.testing.assert_array_equal(landscape['labels'][0, :1], [2])
  assert landscape['image_id'][0] == 7 and portrait['image_id'][0] == 9
  assert dataset.category_ids[2] == 3
