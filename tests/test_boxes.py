"""Tests of dla_jax.boxes: IoU, GIoU and the point / anchor encodings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dla_jax import boxes as box_ops
from dla_jax.priors import make_priors

DEGENERATE = np.array([
    [0, 0, 0, 0],  # padding
    [5, 5, 5, 5],  # a point
    [3, 1, 3, 9],  # zero width
    [8, 8, 2, 2],  # inverted
    [0, 0, 10, 10],
    [1e4, 1e4, 1e4 + 1e-3, 1e4 + 1e-3],  # tiny and far
], np.float32)


def _random_boxes(rng, n, low=1.0):
  xy = rng.uniform(-50, 200, (n, 2))
  return np.concatenate([xy, xy + rng.uniform(low, 150, (n, 2))], axis=1).astype(np.float32)


def test_iou_of_two_overlapping_squares():
  iou = box_ops.box_iou(np.array([[0, 0, 10, 10]], np.float32),
                        np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 0, 30, 10]], np.float32))
  np.testing.assert_allclose(iou, [[25 / 175, 1.0, 0.0]], rtol=1e-6)


def test_pairwise_iou_and_giou_diagonals_equal_the_aligned_ones():
  rng = np.random.default_rng(0)
  a, b = _random_boxes(rng, 7), _random_boxes(rng, 7)
  np.testing.assert_allclose(np.diag(box_ops.box_iou(a, b)), box_ops.aligned_iou(a, b), rtol=1e-6)
  np.testing.assert_allclose(np.diag(box_ops.box_giou(a, b)), box_ops.aligned_giou(a, b),
                             rtol=1e-6)


def test_giou_equals_iou_when_one_box_contains_the_other():
  outer = np.array([0, 0, 20, 10], np.float32)
  inner = np.array([2, 2, 12, 8], np.float32)
  np.testing.assert_allclose(box_ops.aligned_giou(outer, inner), 60 / 200, rtol=1e-6)


def test_giou_of_far_apart_boxes_approaches_minus_one():
  a = np.array([0, 0, 1, 1], np.float32)
  b = np.array([100, 100, 101, 101], np.float32)
  np.testing.assert_allclose(box_ops.aligned_giou(a, b), -(101**2 - 2) / 101**2, rtol=1e-6)
  rng = np.random.default_rng(1)
  giou = box_ops.box_giou(_random_boxes(rng, 30), _random_boxes(rng, 30))
  assert np.all((giou >= -1) & (giou <= 1))


@pytest.mark.slow
def test_degenerate_and_padded_boxes_give_finite_values_and_gradients():
  a = jnp.asarray(DEGENERATE)
  b = jnp.asarray(np.roll(DEGENERATE, 1, axis=0))

  def total(a, b):
    return (box_ops.box_iou(a, b).sum() + box_ops.box_giou(a, b).sum() +
            box_ops.aligned_giou(a, b).sum() + box_ops.aligned_iou(a, a).sum())

  values = [box_ops.box_iou(a, b), box_ops.box_giou(a, b), box_ops.aligned_giou(a, a)]
  grads = jax.grad(total, argnums=(0, 1))(a, b)
  for x in values + list(grads):
    assert np.isfinite(x).all()
  np.testing.assert_allclose(box_ops.aligned_iou(a[:1], a[:1]), 0.0)


def test_points_round_trip_through_encode_and_decode():
  priors = make_priors((64, 96), (8, 16, 32), 8.0)
  rng = np.random.default_rng(2)
  boxes = _random_boxes(rng, len(priors.centers))
  ltrb = box_ops.encode_points(priors.centers, priors.strides, boxes)
  np.testing.assert_allclose(box_ops.decode_points(priors.centers, priors.strides, ltrb), boxes,
                             atol=1e-4)
  inside = np.array([[0, 0, 64, 64]], np.float32).repeat(len(priors.centers), 0)
  ltrb = box_ops.encode_points(priors.centers, priors.strides, inside)
  np.testing.assert_allclose(ltrb[0], [4 / 8, 4 / 8, 60 / 8, 60 / 8])


def test_deltas_round_trip_through_encode_and_decode():
  priors = make_priors((64, 96), (8, 16, 32), 8.0)
  rng = np.random.default_rng(3)
  boxes = _random_boxes(rng, len(priors.anchors), low=4.0)
  deltas = box_ops.encode_deltas(priors.anchors, boxes)
  np.testing.assert_allclose(box_ops.decode_deltas(priors.anchors, deltas), boxes, atol=1e-3)


def test_deltas_use_the_mmdetection_target_stds():
  anchor = np.array([[0, 0, 10, 10]], np.float32)
  box = np.array([[1, 2, 21, 12]], np.float32)  # centre moved by (6, 2), width doubled
  np.testing.assert_allclose(box_ops.encode_deltas(anchor, box),
                             [[0.6 / 0.1, 0.2 / 0.1, math.log(2) / 0.2, 0.0]], rtol=1e-5)


def test_encoding_a_degenerate_box_is_finite():
  anchors = np.array([[0, 0, 8, 8]], np.float32).repeat(len(DEGENERATE), 0)
  assert np.isfinite(box_ops.encode_deltas(anchors, DEGENERATE)).all()


def test_decoded_width_is_clipped_at_1000_over_16_times_the_anchor():
  anchor = np.array([[0, 0, 16, 16]], np.float32)
  boxes = box_ops.decode_deltas(anchor, np.array([[0, 0, 1e3, -1e3]], np.float32))
  np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 1000.0, rtol=1e-4)
  np.testing.assert_allclose(boxes[0, 3] - boxes[0, 1], 16.0 * 16 / 1000, rtol=1e-4)


@pytest.mark.parametrize('mode', ['point', 'anchor'])
def test_decode_broadcasts_over_a_leading_batch_dimension(mode):
  priors = make_priors((64, 64), (8, 16), 8.0)
  reg = np.random.default_rng(4).uniform(0, 2, (3, len(priors.centers), 4)).astype(np.float32)
  batched = box_ops.decode(reg, priors, mode)
  assert batched.shape == reg.shape
  np.testing.assert_allclose(batched[1], box_ops.decode(reg[1], priors, mode), rtol=1e-6)


def test_decode_rejects_an_unknown_prior_mode():
  priors = make_priors((64, 64), (8,), 8.0)
  with pytest.raises(ValueError, match='prior_mode'):
    box_ops.decode(np.zeros((len(priors.centers), 4), np.float32), priors, 'box')
