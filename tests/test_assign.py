"""Tests of dla_jax.assign: the jitted assigner against the NumPy reference, ATSS, alpha."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dla_jax.configs import default
from dla_jax import assign as assign_lib
from dla_jax import boxes as box_ops
from dla_jax.priors import make_priors
from reference_assign import reference_assign

STRIDES = (8, 16, 32, 64, 128)
NUM_CLASSES = 5
MAX_BOXES = 12
BATCH = 2
# Float32 (jitted) and float64 (reference) metrics agree to ~1e-7; decisions closer than this to
# the threshold, the inside margin or another GT's metric may legitimately differ.
TOL = 1e-5
KINDS = ('normal', 'normal', 'tiny', 'huge', 'outside', 'duplicate', 'zero_area')

_assign_batch = jax.jit(
    assign_lib.assign_batch,
    static_argnames=('level_sizes', 'topk', 'gamma', 'num_classes', 'name'))


def _static(priors, name='dla'):
  return dict(level_sizes=priors.level_sizes, topk=10, gamma=1.0, num_classes=NUM_CLASSES,
              name=name)


def _random_gts(rng, image_hw, kinds, num_real, padding):
  """GT boxes [G, 4], labels [G], valid [G] of the given kinds; slots past num_real are padding."""
  h, w = image_hw
  boxes = np.zeros((MAX_BOXES, 4))
  for j, kind in enumerate(kinds[:num_real]):
    if kind == 'duplicate' and j > 0:
      boxes[j] = boxes[rng.integers(j)]
      continue
    if kind == 'tiny':
      size = rng.uniform(0.2, 4.0, 2)
    elif kind == 'huge':
      size = rng.uniform(0.8, 1.5, 2) * (w, h)
    elif kind == 'zero_area':
      size = rng.uniform(0.0, 60.0, 2) * (rng.permutation([0.0, 1.0]))
    else:
      size = rng.uniform(4.0, 0.6 * min(h, w), 2)
    if kind in ('outside', 'huge'):
      xy = rng.uniform(-size, (w, h))
    else:
      xy = rng.uniform(0.0, np.maximum((w, h) - size, 0.0))
    boxes[j] = np.concatenate([xy, xy + size])
  labels = rng.integers(0, NUM_CLASSES, MAX_BOXES)
  valid = np.arange(MAX_BOXES) < num_real
  if padding == 'garbage':
    xy = rng.uniform(-50, 200, (MAX_BOXES, 2))
    garbage = np.concatenate([xy, xy + rng.uniform(1, 100, (MAX_BOXES, 2))], axis=1)
    boxes = np.where(valid[:, None], boxes, garbage)
    labels = np.where(valid, labels, -1)
  return boxes.astype(np.float32), labels.astype(np.int32), valid


def _random_predictions(rng, priors, gt_boxes, num_real, score_scale):
  """Class probabilities [N, C] and predicted boxes [N, 4], some near the GTs."""
  n = len(priors.centers)
  probs = (rng.uniform(0, 1, (n, NUM_CLASSES)) ** score_scale).astype(np.float32)
  jitter = rng.normal(0, 0.3, (n, 4)) * (priors.anchors[:, 2:3] - priors.anchors[:, 0:1])
  pred = priors.anchors + jitter
  if num_real:
    near = rng.uniform(size=n) < 0.5
    targets = gt_boxes[rng.integers(num_real, size=n)]
    pred = np.where(near[:, None], targets + rng.normal(0, 3, (n, 4)), pred)
  return probs, pred.astype(np.float32)


@st.composite
def scenes(draw, image_hw):
  """A batch of images with random GTs (every kind, padding, no GT) and predictions."""
  seed = draw(st.integers(0, 2**32 - 1))
  images = []
  for _ in range(BATCH):
    num_real = draw(st.integers(0, MAX_BOXES))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=MAX_BOXES, max_size=MAX_BOXES))
    padding = draw(st.sampled_from(('zeros', 'garbage')))
    score_scale = draw(st.sampled_from((0.3, 1.0, 4.0)))
    images.append((num_real, kinds, padding, score_scale))
  alpha = draw(st.floats(0.0, 1.0))
  rng = np.random.default_rng(seed)
  priors = make_priors(image_hw, STRIDES, 8.0)
  batch = []
  for num_real, kinds, padding, score_scale in images:
    boxes, labels, valid = _random_gts(rng, image_hw, kinds, num_real, padding)
    probs, pred = _random_predictions(rng, priors, boxes, num_real, score_scale)
    batch.append((boxes, labels, valid, probs, pred))
  return priors, [np.stack(x) for x in zip(*batch)], np.float32(alpha)


def assert_matches_reference(out, ref, gt_boxes, gt_labels):
  """The jitted assignment of one image equals the reference, up to near-equal metrics."""
  near_boundary = np.zeros(len(ref.positive), bool)
  for bag in filter(None, ref.bags):
    close = (np.abs(bag.metrics - bag.threshold) < TOL) | (np.abs(bag.margins - 0.01) < 1e-4)
    near_boundary[bag.indices[close]] = True
  differ = np.flatnonzero(np.asarray(out.positive) != ref.positive)
  assert near_boundary[differ].all(), differ[~near_boundary[differ]]
  for i in np.flatnonzero(np.asarray(out.positive) & ref.positive):
    best = max(m for m, _ in ref.claims[i])
    tied = [j for m, j in ref.claims[i] if m >= best - TOL]
    j = int(out.gt_index[i])
    assert j in tied, (i, j, ref.claims[i])
    np.testing.assert_allclose(out.metric_targets[i], best, atol=TOL)
    np.testing.assert_allclose(out.reg_weights[i], best, atol=TOL)
    assert out.labels[i] == gt_labels[j]
    np.testing.assert_array_equal(out.box_targets[i], gt_boxes[j])
  negative = ~np.asarray(out.positive)
  np.testing.assert_array_equal(np.asarray(out.labels)[negative], NUM_CLASSES)
  np.testing.assert_array_equal(np.asarray(out.gt_index)[negative], -1)
  np.testing.assert_array_equal(np.asarray(out.metric_targets)[negative], 0.0)


def _check_against_reference(scene, name):
  priors, (boxes, labels, valid, probs, pred), alpha = scene
  out = _assign_batch(priors.anchors, priors.centers, boxes, labels, valid, probs, pred, alpha,
                      **_static(priors, name))
  for b in range(BATCH):
    ref = reference_assign(priors.anchors, priors.centers, priors.level_sizes, boxes[b],
                           labels[b], valid[b], probs[b], pred[b], alpha, atss=name == 'atss')
    bags = _candidate_bags(priors, boxes[b], labels[b], valid[b], probs[b], pred[b], alpha, name)
    for j, bag in enumerate(ref.bags):
      if bag is None:
        continue
      assert set(np.asarray(bags.indices[j]).tolist()) == set(bag.indices.tolist())
      np.testing.assert_allclose(bags.thresholds[j], bag.threshold, atol=TOL)
    assert_matches_reference(jax.tree.map(lambda x: x[b], out), ref, boxes[b], labels[b])


_PROPERTY = hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                                suppress_health_check=[hypothesis.HealthCheck.too_slow])


@pytest.mark.slow
@_PROPERTY
@hypothesis.given(scenes((128, 192)))
def test_dla_matches_reference(scene):
  _check_against_reference(scene, 'dla')


@_PROPERTY
@hypothesis.given(scenes((64, 64)))
def test_dla_matches_reference_when_levels_are_smaller_than_topk(scene):
  _check_against_reference(scene, 'dla')


@_PROPERTY
@hypothesis.given(scenes((96, 128)))
def test_atss_matches_reference_with_zero_scores_and_alpha_one(scene):
  _check_against_reference(scene, 'atss')


def _one_image(priors, boxes, labels=None, valid=None, probs=None, pred=None, seed=0):
  rng = np.random.default_rng(seed)
  n = len(priors.centers)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  g = len(boxes)
  labels = np.zeros(g, np.int32) if labels is None else np.asarray(labels, np.int32)
  valid = np.ones(g, bool) if valid is None else np.asarray(valid)
  if probs is None:
    probs = rng.uniform(0, 1, (n, NUM_CLASSES)).astype(np.float32)
  if pred is None:
    pred = priors.anchors.copy()
  return boxes, labels, valid, probs, pred


def _assign(priors, boxes, labels, valid, probs, pred, alpha=0.9, name='dla'):
  return jax.jit(assign_lib.assign, static_argnames=tuple(_static(priors)))(
      priors.anchors, priors.centers, boxes, labels, valid, probs, pred, jnp.float32(alpha),
      **_static(priors, name))


def _candidate_bags(priors, boxes, labels, valid, probs, pred, alpha=0.9, name='dla'):
  return jax.jit(assign_lib.candidate_bags, static_argnames=('level_sizes', 'topk', 'name'))(
      priors.anchors, priors.centers, boxes, labels, valid, probs, pred, jnp.float32(alpha),
      level_sizes=priors.level_sizes, topk=10, name=name)


def test_point_claimed_by_two_gts_goes_to_higher_metric():
  priors = make_priors((128, 128), STRIDES, 8.0)
  # Two overlapping GTs of different classes; the scores of class 1 are higher everywhere, so
  # on shared priors the second GT's metric is higher.
  boxes, labels, valid, probs, pred = _one_image(
      priors, [[30, 30, 90, 90], [34, 34, 94, 94]], labels=[0, 1])
  probs[:, 1] = np.minimum(probs[:, 0] + 0.3, 1.0)
  out = _assign(priors, boxes, labels, valid, probs, pred, alpha=0.5)
  bags = _candidate_bags(priors, boxes, labels, valid, probs, pred, alpha=0.5)
  shared = set(np.asarray(bags.indices[0][bags.positive[0]]).tolist()) & set(
      np.asarray(bags.indices[1][bags.positive[1]]).tolist())
  assert shared
  for i in shared:
    m0 = bags.metrics[0][bags.indices[0] == i][0]
    m1 = bags.metrics[1][bags.indices[1] == i][0]
    assert out.gt_index[i] == (1 if m1 > m0 else 0)
    np.testing.assert_allclose(out.metric_targets[i], max(m0, m1))


def test_duplicate_gts_tie_and_the_first_slot_wins():
  priors = make_priors((128, 128), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(priors, [[20, 30, 90, 100]] * 3, labels=[2] * 3)
  valid[0] = False
  out = _assign(priors, boxes, labels, valid, probs, pred)
  assert out.positive.any()
  np.testing.assert_array_equal(out.gt_index[out.positive], 1)


def test_distance_ties_break_towards_the_lower_prior_index():
  # Centres on prior centres and exactly between them make many equal distances.
  priors = make_priors((128, 128), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(
      priors, [[0, 0, 24, 24], [8, 8, 24, 24], [16, 0, 48, 64], [40, 40, 88, 88], [0, 0, 128, 128]])
  bags = _candidate_bags(priors, boxes, labels, valid, probs, pred)
  ref = reference_assign(priors.anchors, priors.centers, priors.level_sizes, boxes, labels, valid,
                         probs, pred, 0.9)
  for j, bag in enumerate(ref.bags):
    np.testing.assert_array_equal(bags.indices[j], bag.indices)


def test_padded_gts_never_assign():
  priors = make_priors((128, 128), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(
      priors, [[10, 10, 100, 100], [20, 20, 60, 60], [0, 0, 128, 128]], valid=[True, False, False])
  out = _assign(priors, boxes, labels, valid, probs, pred)
  assert out.positive.any()
  np.testing.assert_array_equal(np.unique(out.gt_index[out.positive]), [0])


def test_no_gt_leaves_every_prior_background():
  priors = make_priors((128, 128), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(priors, np.zeros((4, 4)), valid=np.zeros(4, bool))
  out = _assign(priors, boxes, labels, valid, probs, pred)
  assert not out.positive.any()
  np.testing.assert_array_equal(out.labels, NUM_CLASSES)
  np.testing.assert_array_equal(out.reg_weights, 0.0)


def test_zero_area_gt_gets_no_positive():
  priors = make_priors((128, 128), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(priors, [[40, 40, 40, 90], [10, 20, 60, 20]])
  out = _assign(priors, boxes, labels, valid, probs, pred)
  assert not out.positive.any()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))


def test_atss_is_dla_with_alpha_one_and_zero_scores():
  priors = make_priors((128, 192), STRIDES, 8.0)
  boxes, labels, valid, probs, pred = _one_image(
      priors, [[10, 12, 90, 70], [50, 40, 180, 125], [5, 5, 20, 30]], labels=[0, 2, 4])
  dla = _assign(priors, boxes, labels, valid, np.zeros_like(probs), pred, alpha=1.0)
  atss = _assign(priors, boxes, labels, valid, probs, pred, alpha=0.3, name='atss')
  assert atss.positive.any()
  for a, b in zip(dla, atss):
    np.testing.assert_array_equal(a, b)
  iou = box_ops.box_iou(priors.anchors, boxes)
  pos = np.asarray(atss.positive)
  np.testing.assert_allclose(atss.metric_targets[pos],
                             iou[pos, np.asarray(atss.gt_index)[pos]], rtol=1e-6)


def test_compiles_once_per_image_size():
  priors = make_priors((64, 96), STRIDES, 8.0)
  traces = []

  def counted(*args, **kwargs):
    traces.append(1)
    return assign_lib.assign_batch(*args, **kwargs)

  jitted = jax.jit(counted, static_argnames=tuple(_static(priors)))
  rng = np.random.default_rng(0)
  for num_real, alpha in ((0, 1.0), (1, 0.95), (MAX_BOXES, 0.9), (3, 0.5)):
    boxes, labels, valid = _random_gts(rng, (64, 96), ['normal'] * MAX_BOXES, num_real, 'zeros')
    probs, pred = _random_predictions(rng, priors, boxes, num_real, 1.0)
    jitted(priors.anchors, priors.centers, boxes[None], labels[None], valid[None], probs[None],
           pred[None], jnp.float32(alpha), **_static(priors))
  assert len(traces) == 1
  assert jitted._cache_size() == 1


def test_never_builds_a_tensor_of_priors_by_gts_by_classes():
  priors = make_priors((128, 192), STRIDES, 8.0)
  n, g, c = len(priors.centers), MAX_BOXES, NUM_CLASSES
  boxes, labels, valid, probs, pred = _one_image(priors, np.zeros((g, 4)))
  jaxpr = jax.make_jaxpr(lambda *a: assign_lib.assign(*a, **_static(priors)))(
      priors.anchors, priors.centers, boxes, labels, valid, probs, pred, jnp.float32(0.9))
  sizes = [v.aval.size for e in jaxpr.eqns for v in e.outvars]
  assert max(sizes) <= max(n * c, n * g)


def _assigner_config(**overrides):
  config = default.get_config().assigner
  config.update(overrides)
  return config


def test_alpha_starts_at_one_and_decays_to_alpha0():
  config = _assigner_config()
  assert assign_lib.alpha_schedule(0, 100, config, 12) == 1.0
  expected = 0.1 * math.exp(-12 / math.sqrt(12)) + 0.9
  np.testing.assert_allclose(assign_lib.alpha_schedule(1200, 100, config, 12), expected,
                             rtol=1e-6)


def test_epoch_alpha_is_constant_within_an_epoch_and_continuous_is_not():
  step = jnp.arange(300)
  epoch = jax.jit(lambda s: assign_lib.alpha_schedule(s, 100, _assigner_config(), 12))(step)
  assert len(np.unique(epoch)) == 3
  np.testing.assert_allclose(epoch[150], 0.1 * math.exp(-1 / math.sqrt(12)) + 0.9, rtol=1e-6)
  continuous = assign_lib.alpha_schedule(step, 100, _assigner_config(alpha_schedule='continuous'),
                                         12)
  assert np.all(np.diff(continuous) < 0)
  np.testing.assert_allclose(continuous[150], 0.1 * math.exp(-1.5 / math.sqrt(12)) + 0.9,
                             rtol=1e-6)


@pytest.mark.parametrize('fixed', [0.5, 0.8, 1.0])
def test_fixed_alpha_ignores_the_step(fixed):
  config = _assigner_config(alpha_schedule='fixed', fixed_alpha=fixed)
  np.testing.assert_allclose(assign_lib.alpha_schedule(jnp.int32(777), 10, config, 12), fixed)


def test_atss_alpha_is_one():
  assert assign_lib.alpha_schedule(5000, 10, _assigner_config(name='atss'), 12) == 1.0


def test_assigner_config_has_the_paper_defaults():
  config = _assigner_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert (config.name, config.topk, config.alpha0) == ('dla', 10, 0.9)
