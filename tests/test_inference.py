"""Inference: on-device NMS equals plain greedy NMS; decode, threshold and ranking behave."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dla_jax.configs import shapes_tiny
from dla_jax import boxes as boxes_lib
from dla_jax import inference
from dla_jax import priors as priors_lib


def _numpy_greedy_nms(boxes, scores, iou_threshold):
  """Textbook greedy NMS: visit boxes by descending score, keep one unless it overlaps a kept
  one by more than the threshold."""
  order = np.argsort(-scores, kind='stable')
  kept = []
  for i in order:
    ok = True
    for j in kept:
      x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
      x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
      inter = max(x2 - x1, 0) * max(y2 - y1, 0)
      area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
      if inter / (area(boxes[i]) + area(boxes[j]) - inter) > iou_threshold:
        ok = False
        break
    if ok:
      kept.append(i)
  return kept


@pytest.mark.parametrize('seed', range(5))
def test_device_nms_keeps_the_same_boxes_as_numpy_greedy_nms(seed):
  rng = np.random.default_rng(seed)
  k = 300
  xy = rng.uniform(0, 200, size=(k, 2))
  wh = rng.uniform(5, 60, size=(k, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  scores = rng.uniform(size=k).astype(np.float32)
  expected = _numpy_greedy_nms(boxes, scores, 0.6)
  indices, keep = jax.jit(inference.greedy_nms, static_argnums=(2, 3))(
      jnp.asarray(boxes), jnp.asarray(scores), 0.6, k)
  got = np.asarray(indices)[np.asarray(keep)]
  assert list(got) == expected
  # Stopping after D rounds gives the first D of them.
  indices, keep = inference.greedy_nms(jnp.asarray(boxes), jnp.asarray(scores), 0.6, 10)
  assert list(np.asarray(indices)) == expected[:10] and bool(keep.all())


def _outputs_with_one_object(config, image_hw, box, label, quality):
  """Head outputs where every prior of P3 regresses ``box`` but only one is confident."""
  priors = priors_lib.make_priors(image_hw, (8, 16, 32, 64, 128), 8.0)
  n, c = len(priors.centers), config.data.num_classes
  ltrb = boxes_lib.encode_points(jnp.asarray(priors.centers), jnp.asarray(priors.strides),
                                 jnp.tile(jnp.asarray(box, jnp.float32), (n, 1)))
  cls_logits = np.full((1, n, c), -10.0, np.float32)
  cls_logits[0, :5, label] = [3.0, 2.0, 1.0, 0.0, -1.0]   # overlapping duplicates
  cls_logits[0, 7, (label + 1) % c] = 2.5                  # same box, another class
  quality_logits = np.full((1, n), quality, np.float32)
  return priors, {'cls_logits': jnp.asarray(cls_logits), 'box_reg': ltrb[None],
                  'quality_logits': jnp.asarray(quality_logits)}


@pytest.mark.slow
def test_duplicates_are_suppressed_within_a_class_but_not_across_classes():
  config = shapes_tiny.get_config()
  priors, outputs = _outputs_with_one_object(config, (64, 64), [10., 12., 40., 50.], 2, 0.0)
  det = inference.detect(outputs, jnp.array([[64, 64]]), priors, config)
  valid = np.asarray(det.valid[0])
  assert valid.sum() == 2
  np.testing.assert_array_equal(np.asarray(det.labels[0])[valid], [2, 3])
  np.testing.assert_allclose(np.asarray(det.boxes[0])[valid], [[10, 12, 40, 50]] * 2, atol=1e-3)
  # cls_x_quality: sigmoid(3) * sigmoid(0), best first.
  np.testing.assert_allclose(np.asarray(det.scores[0])[valid],
                             [jax.nn.sigmoid(3.0) * 0.5, jax.nn.sigmoid(2.5) * 0.5], rtol=1e-5)


def test_quality_ranking_scores_boxes_by_quality_after_class_threshold():
  config = shapes_tiny.get_config()
  config.inference.ranking = 'quality'
  priors, outputs = _outputs_with_one_object(config, (64, 64), [10., 12., 40., 50.], 2, 1.0)
  det = inference.detect(outputs, jnp.array([[64, 64]]), priors, config)
  valid = np.asarray(det.valid[0])
  np.testing.assert_allclose(np.asarray(det.scores[0])[valid], [jax.nn.sigmoid(1.0)] * 2,
                             rtol=1e-6)


def test_boxes_are_clipped_to_the_resized_image_and_low_scores_dropped():
  config = shapes_tiny.get_config()
  priors, outputs = _outputs_with_one_object(config, (64, 64), [-5., 12., 70., 50.], 0, 0.0)
  det = inference.detect(outputs, jnp.array([[64, 48]]), priors, config)
  valid = np.asarray(det.valid[0])
  np.testing.assert_allclose(np.asarray(det.boxes[0])[valid][0], [0, 12, 48, 50], atol=1e-3)
  # Pairs at logit -10 (probability under the 0.05 threshold) never appear.
  assert valid.sum() == 2 and det.boxes.shape == (1, 100, 4)
