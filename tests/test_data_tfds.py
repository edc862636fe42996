"""TFDS COCO source: read through ``tfds.data_source`` from a split prepared as ArrayRecord, or
exported to COCO json; either way read back in pixels.

Nothing is downloaded. The data_source tests prepare a two-image dataset with COCO's features
as ArrayRecord (and as TFRecord, for the error that names the conversion). The export tests use
``tfds.testing.mock_data``, whose manual mode (``as_dataset_fn``) serves well-formed COCO
examples, encoded and decoded by TFDS's own features, so that ``SkipDecoding`` hands over real
image bytes as it does on a prepared dataset.

TensorFlow is imported by the fixture, not at collection: imported before torchvision (which
test_pretrained imports), its libraries crash torchvision's triton import.
"""

import functools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dla_jax import errors
from dla_jax.configs import shapes_tiny
from dla_jax.data import coco_json
from dla_jax.data import pipeline
from dla_jax.data import tfds_coco

REPO = pathlib.Path(__file__).resolve().parents[1]


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


def _tfds_config(cache_dir, name='coco/2017', data_dir='', read='export', workers=0):
  config = shapes_tiny.get_config()
  data = config.data
  data.source, data.num_classes, data.max_boxes = 'tfds', 80, 4
  data.tfds_name, data.tfds_data_dir, data.tfds_read = name, data_dir, read
  data.tfds_train_split, data.tfds_val_split = 'train', 'validation'
  data.cache_dir = str(cache_dir)
  data.scale, data.short_side_range, data.flip_prob, data.num_threads = (120, 80), (80, 80), 0., 1
  data.num_workers = workers
  data.image_size = (96, 128)
  return config


def _check_eval_batches(config):
  iterator, dataset = pipeline.make_eval_iterator(config, global_batch=1)
  landscape, portrait = list(iterator)
  assert landscape['images'].shape == (1, 96, 128, 3)
  assert portrait['images'].shape == (1, 128, 96, 3)
  np.testing.assert_array_equal(landscape['image_hw'], [[80, 120]])
  np.testing.assert_allclose(landscape['boxes'][0, 0], [12, 20, 60, 60], atol=1e-3)
  np.testing.assert_array_equal(landscape['labels'][0, :1], [2])
  assert landscape['image_id'][0] == 7 and portrait['image_id'][0] == 9
  assert landscape['images'][0, 40, 40].min() > 200  # inside the white object
  return dataset


def test_tfds_export_batches_like_any_coco_dataset(mock_coco, tmp_path):
  del mock_coco
  dataset = _check_eval_batches(_tfds_config(tmp_path))
  assert dataset.category_ids[2] == 3


@functools.cache
def _builder_class():
  """A TFDS builder of COCO 2017's detection features (registered once per process)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class DlaTestCoco(tfds.core.GeneratorBasedBuilder):
    """COCO 2017's detection features, two validation images."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(encoding_format='png'),
          'image/filename': tfds.features.Text(),
          'image/id': np.int64,
          'objects': tfds.features.Sequence({
              'area': np.int64, 'bbox': tfds.features.BBoxFeature(), 'id': np.int64,
              'is_crowd': np.bool_, 'label': tfds.features.ClassLabel(num_classes=80)})}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'validation': self._generate_examples()}

    def _generate_examples(self):
      for example in _examples():
        yield example['image/id'], example

  return DlaTestCoco


def _prepare(data_dir, file_format):
  """Prepares the two examples of ``_examples`` in ``data_dir``; returns the dataset's name."""
  _builder_class()(data_dir=str(data_dir), file_format=file_format).download_and_prepare()
  return 'dla_test_coco'


@pytest.fixture(name='array_record_coco', scope='module')
def _array_record_coco(tmp_path_factory):
  pytest.importorskip('tensorflow')
  pytest.importorskip('tensorflow_datasets')
  data_dir = tmp_path_factory.mktemp('tfds_array_record')
  return _prepare(data_dir, 'array_record'), str(data_dir)


@pytest.mark.parametrize('workers', [0, 1])
def test_data_source_reads_an_array_record_split_with_random_access(array_record_coco, tmp_path,
                                                                    workers):
  name, data_dir = array_record_coco
  config = _tfds_config(tmp_path, name, data_dir, 'data_source', workers)
  dataset = _check_eval_batches(config)
  assert dataset.category_ids[2] == 3  # labels 0..79 map to ids 1..80 outside 'coco'
  first = dataset.records[0]  # records are in image id order, the source in TFDS's own
  assert sorted(r.source_index for r in dataset.records) == [0, 1]
  assert first.path == f'{name}:validation/000000000007.jpg'
  with open(dataset.annotations) as f:
    crowd = json.load(f)['annotations'][1]
  assert crowd['iscrowd'] == 1  # kept for evaluation, left out of the training targets
  assert len(first.boxes) == 1


def test_data_source_trains_without_importing_tensorflow(array_record_coco, tmp_path):
  name, data_dir = array_record_coco
  config = _tfds_config(tmp_path, name, data_dir, 'data_source')
  pipeline.load_dataset(config, 'val')  # writes the annotations json once
  script = f'''
import sys
from dla_jax.data import pipeline
from tests.test_data_tfds import _tfds_config
config = _tfds_config({str(tmp_path)!r}, {name!r}, {data_dir!r}, 'data_source')
config.data.tfds_train_split = 'validation'
iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
batch = next(iterator)
iterator.close()
assert batch['real'].all() and batch['images'].any()
print('tensorflow' in sys.modules)
'''
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, check=True)
  assert result.stdout.split()[-1] == 'False', result.stderr


def test_a_tfrecord_split_gets_the_command_that_converts_it(tmp_path):
  pytest.importorskip('tensorflow')
  pytest.importorskip('tensorflow_datasets')
  name = _prepare(tmp_path / 'tfds', 'tfrecord')
  config = _tfds_config(tmp_path / 'cache', name, str(tmp_path / 'tfds'), 'data_source')
  with pytest.raises(errors.ConfigError, match=r'prepared as TFRecord.*tfds convert_format '
                     r'--dataset_version_dir=.*dla_test_coco/1.0.0 .*data.tfds_read=export'):
    pipeline.load_dataset(config, 'val')
