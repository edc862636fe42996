"""Transforms: boxes stay on their pixels through resize, flip and pad; padding; normalisation."""

import numpy as np
import pytest
from PIL import Image

from dla_jax.data import batching
from dla_jax.data import image_annotations
from dla_jax.data import transforms


def _painted_region(image: np.ndarray) -> np.ndarray:
  """(x1, y1, x2, y2) of the pixels brighter than half, in continuous pixel coordinates."""
  ys, xs = np.nonzero(image.mean(axis=-1) > 127.5)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize('height, width, box, scale, flip', [
    (480, 640, (100, 50, 300, 200), (1333, 800), False),
    (480, 640, (100, 50, 300, 200), (1333, 800), True),
    (640, 427, (13, 301, 420, 377), (1333, 640), True),  # portrait, scale jitter short side
    (500, 333, (0, 0, 7, 9), (1333, 800), True),  # small box at the corner
    (1000, 1200, (611, 222, 1200, 999), (1333, 800), True),  # downscaled, touching the edges
])
def test_box_stays_on_its_painted_pixels_through_resize_flip_and_pad(
    tmp_path, height, width, box, scale, flip):
  image = np.zeros((height, width, 3), np.uint8)
  x1, y1, x2, y2 = box
  image[y1:y2, x1:x2] = 255
  path = tmp_path / 'painted.png'
  Image.fromarray(image).save(path)
  record = image_annotations.Record(image_id=1, path=str(path), height=height, width=width,
                              boxes=np.array([box], np.float32), labels=np.array([0], np.int32))
  iterator = batching.TrainIterator(
      [record], image_size=(800, 1344), max_boxes=3, global_batch=1, seed=0, scale=scale,
      short_side_range=(min(scale),) * 2, flip_prob=float(flip), num_threads=1)
  batch = next(iterator)
  iterator.close()

  landscape = width >= height
  assert batch['images'].shape[1:3] == ((800, 1344) if landscape else (1344, 800))
  h, w = batch['image_hw'][0]
  assert (h, w) == transforms.rescale_size(height, width, scale)
  assert not batch['images'][0, h:].any() and not batch['images'][0, :, w:].any()
  np.testing.assert_allclose(batch['boxes'][0, 0], _painted_region(batch['images'][0]), atol=1.0)
  np.testing.assert_array_equal(batch['valid'][0], [True, False, False])
  np.testing.assert_allclose(batch['scale'][0], [h / height, w / width])


def test_rescale_keeps_aspect_with_long_and_short_side_within_scale():
  assert transforms.rescale_size(480, 640, (1333, 800)) == (800, 1067)
  assert transforms.rescale_size(640, 480, (1333, 800)) == (1067, 800)
  assert transforms.rescale_size(400, 1200, (1333, 800)) == (444, 1333)  # long side binds
  assert transforms.rescale_size(128, 128, (128, 128)) == (128, 128)


def test_orientation_picks_image_size_or_its_transpose():
  assert transforms.padded_shape(True, (800, 1344)) == (800, 1344)
  assert transforms.padded_shape(False, (800, 1344)) == (1344, 800)


def test_more_boxes_than_slots_keeps_the_largest_in_their_order():
  boxes = np.array([[0, 0, 2, 2], [0, 0, 9, 9], [0, 0, 1, 1], [0, 0, 5, 5]], np.float32)
  labels = np.array([1, 2, 3, 4], np.int32)
  out_boxes, out_labels, valid = transforms.pad_boxes(boxes, labels, 2)
  np.testing.assert_array_equal(out_boxes, boxes[[1, 3]])
  np.testing.assert_array_equal(out_labels, [2, 4])
  np.testing.assert_array_equal(valid, [True, True])


def test_fewer_boxes_than_slots_are_padded_with_zeros_and_invalid():
  boxes, labels, valid = transforms.pad_boxes(
      np.array([[1, 2, 3, 4]], np.float32), np.array([5], np.int32), 3)
  np.testing.assert_array_equal(boxes, [[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(labels, [5, 0, 0])
  np.testing.assert_array_equal(valid, [True, False, False])
