"""Tests of dla_jax.losses: eqs. 4-8, ATSS's loss, normalisers, and finite gradients in degenerate
batches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dla_jax.configs import default
from dla_jax import assign as assign_lib
from dla_jax import boxes as box_ops
from dla_jax import losses
from dla_jax import step as step_lib
from dla_jax.priors import Priors
from dla_jax.priors import make_priors

IMAGE_HW = (128, 128)
NUM_CLASSES = 5
PRIORS = make_priors(IMAGE_HW, (8, 16, 32, 64, 128), 8.0)


def _config(prior='point', name='dla', head='dla'):
  config = default.get_config()
  config.model.prior = prior
  config.model.head = head
  config.assigner.name = name
  return config


def _outputs(rng, batch, prior='point'):
  n = len(PRIORS.centers)
  if prior == 'point':
    box_reg = rng.uniform(0.0, 4.0, (batch, n, 4))
  else:
    box_reg = rng.normal(0.0, 1.0, (batch, n, 4))
  return dict(cls_logits=jnp.asarray(rng.normal(-2.0, 2.0, (batch, n, NUM_CLASSES)), jnp.float32),
              box_reg=jnp.asarray(box_reg, jnp.float32),
              quality_logits=jnp.asarray(rng.normal(0.0, 2.0, (batch, n)), jnp.float32))


def _gts(rng, batch, max_boxes, num_real, zero_area=False):
  xy = rng.uniform(0, 100, (batch, max_boxes, 2))
  wh = rng.uniform(4, 60, (batch, max_boxes, 2))
  if zero_area:
    wh[..., 0] = 0.0
  boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, (batch, max_boxes)).astype(np.int32)
  valid = np.broadcast_to(np.arange(max_boxes) < num_real, (batch, max_boxes))
  boxes = np.where(valid[..., None], boxes, 0.0).astype(np.float32)
  return boxes, labels, valid


def _loss_fn(config, mesh=None):
  return functools.partial(losses.detection_loss, priors=PRIORS, config=config, mesh=mesh)


def _bce(c, t):
  return -(t * np.log(c) + (1 - t) * np.log(1 - c))


def test_focal_loss_matches_its_formula():
  logits = np.array([-3.0, -0.5, 0.0, 2.0], np.float32)
  targets = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  p_t = np.where(targets == 1, p, 1 - p)
  alpha_t = np.where(targets == 1, 0.25, 0.75)
  expected = -alpha_t * (1 - p_t)**2 * np.log(p_t)
  np.testing.assert_allclose(losses.focal_loss(logits, targets, 0.25, 2.0), expected, rtol=1e-5)


def test_focal_loss_is_stable_for_extreme_logits():
  logits = jnp.array([-100.0, 100.0, -100.0, 100.0])
  targets = jnp.array([0.0, 1.0, 1.0, 0.0])
  value, grad = jax.value_and_grad(lambda x: losses.focal_loss(x, targets, 0.25, 2.0).sum())(
      logits)
  assert np.isfinite(value) and np.isfinite(grad).all()


def test_metric_loss_follows_both_branches_of_eq_7():
  logits = np.array([-1.0, 0.3, 2.0], np.float32)
  c = 1 / (1 + np.exp(-logits.astype(np.float64)))
  m = np.array([0.2, 0.7, 0.0])
  positive = np.abs(c - m)**2 * _bce(c, m)
  np.testing.assert_allclose(losses.metric_loss(logits, m.astype(np.float32), 2.0)[:2],
                             positive[:2], rtol=1e-5)
  np.testing.assert_allclose(losses.metric_loss(logits, np.zeros(3, np.float32), 2.0),
                             c**2 * _bce(c, 0.0), rtol=1e-5)


def test_metric_loss_vanishes_when_the_prediction_equals_the_metric():
  m = np.float32(0.6)
  assert losses.metric_loss(np.log(m / (1 - m)), m, 2.0) < 1e-10


def test_giou_loss_is_zero_for_identical_boxes_and_two_for_distant_ones():
  a = np.array([[0, 0, 10, 10], [0, 0, 1, 1]], np.float32)
  b = np.array([[0, 0, 10, 10], [1e4, 1e4, 1e4 + 1, 1e4 + 1]], np.float32)
  np.testing.assert_allclose(losses.giou_loss(a, b), [0.0, 2.0], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('prior', ['point', 'anchor'])
def test_total_is_the_weighted_sum_with_the_papers_normalisers(prior):
  rng = np.random.default_rng(0)
  config = _config(prior)
  config.loss.cls_weight, config.loss.reg_weight, config.loss.quality_weight = 1.5, 2.0, 0.5
  outputs = _outputs(rng, 2, prior)
  boxes, labels, valid = _gts(rng, 2, 8, 5)
  total, parts = jax.jit(_loss_fn(config))(outputs, gt_boxes=boxes, gt_labels=labels,
                                           gt_valid=valid, alpha=jnp.float32(0.95))
  np.testing.assert_allclose(
      total, 1.5 * parts['loss_cls'] + 2.0 * parts['loss_reg'] + 0.5 * parts['loss_metric'],
      rtol=1e-6)

  pred = np.asarray(box_ops.decode(outputs['box_reg'], PRIORS, prior))
  probs = jax.nn.sigmoid(outputs['cls_logits'])
  targets = jax.jit(functools.partial(assign_lib.assign_batch, level_sizes=PRIORS.level_sizes,
                                      topk=10, gamma=1.0, num_classes=NUM_CLASSES))(
      PRIORS.anchors, PRIORS.centers, boxes, labels, valid, probs, pred, jnp.float32(0.95))
  num_pos = int(targets.positive.sum())
  assert num_pos > 1 and parts['num_pos'] == num_pos
  onehot = jax.nn.one_hot(targets.labels, NUM_CLASSES)
  cls = losses.focal_loss(outputs['cls_logits'], onehot, 0.25, 2.0).sum() / num_pos
  w = np.asarray(targets.reg_weights)
  reg = (w * losses.giou_loss(pred, targets.box_targets)).sum() / w.sum()
  metric = losses.metric_loss(outputs['quality_logits'], targets.metric_targets,
                              2.0).sum() / num_pos
  np.testing.assert_allclose([parts['loss_cls'], parts['loss_reg'], parts['loss_metric']],
                             [cls, reg, metric], rtol=1e-5)


def test_zero_positives_leave_only_the_background_terms():
  rng = np.random.default_rng(1)
  outputs = _outputs(rng, 2)
  boxes, labels, valid = _gts(rng, 2, 6, 0)
  _, parts = jax.jit(_loss_fn(_config()))(outputs, gt_boxes=boxes, gt_labels=labels, gt_valid=valid,
                                 alpha=jnp.float32(1.0))
  assert parts['num_pos'] == 0 and parts['loss_reg'] == 0
  background = losses.focal_loss(outputs['cls_logits'], jnp.zeros_like(outputs['cls_logits']),
                                 0.25, 2.0).sum()
  np.testing.assert_allclose(parts['loss_cls'], background, rtol=1e-6)


@pytest.mark.parametrize('prior,name,head', [('point', 'dla', 'dla'), ('anchor', 'dla', 'dla'),
                                             ('point', 'atss', 'dla'), ('point', 'atss', 'atss'),
                                             ('anchor', 'atss', 'atss')])
@pytest.mark.parametrize('case', ['no_gt', 'one_gt', '100_gts', 'zero_area_gts'])
def test_gradient_wrt_head_outputs_is_finite(prior, name, head, case):
  rng = np.random.default_rng(2)
  max_boxes = 100 if case == '100_gts' else 10
  num_real = {'no_gt': 0, 'one_gt': 1, '100_gts': 100, 'zero_area_gts': 10}[case]
  boxes, labels, valid = _gts(rng, 2, max_boxes, num_real, zero_area=case == 'zero_area_gts')
  outputs = _outputs(rng, 2, prior)
  loss_fn = _loss_fn(_config(prior, name, head))
  (total, parts), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      outputs, gt_boxes=boxes, gt_labels=labels, gt_valid=valid, alpha=jnp.float32(0.92))
  assert np.isfinite(total)
  for g in jax.tree.leaves(grads):
    assert np.isfinite(g).all()
  assert (parts['num_pos'] > 0) == (case in ('one_gt', '100_gts'))


@pytest.mark.slow
@pytest.mark.parametrize('head', ['dla', 'atss'])
def test_a_batch_split_over_a_mesh_has_the_loss_of_the_whole_batch(head):
  """As ``train_step`` computes it: the batch sharded over the devices and the assigner run by
  each device on its own images (``mesh=``); the normalisers still count the positives of the
  whole batch, so loss and gradients are those of the batch on one device. Each device's images
  have a different number of positives, so per-device normalisers would differ."""
  rng = np.random.default_rng(3)
  outputs = _outputs(rng, 4)
  boxes, labels, valid = _gts(rng, 4, 8, 3)
  config = _config(name=head, head=head)
  alpha = jnp.float32(0.9)

  def loss_and_grads(mesh):
    return jax.jit(jax.value_and_grad(
        lambda o, b, l, v: _loss_fn(config, mesh)(o, gt_boxes=b, gt_labels=l, gt_valid=v,
                                                  alpha=alpha)[0]))

  whole_loss, whole_grads = loss_and_grads(None)(outputs, boxes, labels, valid)
  mesh = step_lib.make_mesh(jax.devices()[:4])
  split = jax.device_put((outputs, boxes, labels, valid), step_lib.batch_sharding(mesh))
  split_loss, split_grads = loss_and_grads(mesh)(*split)
  np.testing.assert_allclose(split_loss, whole_loss, rtol=1e-5)
  for key in outputs:
    np.testing.assert_allclose(split_grads[key], whole_grads[key], rtol=1e-4, atol=1e-9)


def test_centerness_targets_follow_atss_formula_on_random_boxes():
  rng = np.random.default_rng(4)
  xy = rng.uniform(0, 100, (50, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (50, 2))], -1).astype(np.float32)
  points = (boxes[:, :2] + rng.uniform(0.01, 0.99, (50, 2)) * (boxes[:, 2:] - boxes[:, :2]))
  got = losses.centerness_targets(jnp.asarray(points, jnp.float32), jnp.asarray(boxes))
  l, t = points[:, 0] - boxes[:, 0], points[:, 1] - boxes[:, 1]
  r, b = boxes[:, 2] - points[:, 0], boxes[:, 3] - points[:, 1]
  expected = np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b) / np.maximum(t, b))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # On the border or outside (background rows hold zero boxes): 0, never NaN.
  edge = losses.centerness_targets(jnp.array([[0., 5.], [50., 50.]]),
                                   jnp.array([[0., 0., 10., 10.], [0., 0., 0., 0.]]))
  np.testing.assert_array_equal(edge, [0.0, 0.0])


@pytest.mark.slow
def test_atss_loss_on_a_hand_worked_two_prior_example():
  """One GT (0, 0, 16, 10); two stride-8 point priors at (4, 4) and (12, 4) whose 8 px anchors
  both overlap it by IoU 0.4, so both are ATSS positives (m = mean + std exactly)."""
  priors = Priors(centers=np.array([[4., 4.], [12., 4.]], np.float32),
                  anchors=np.array([[0., 0., 8., 8.], [8., 0., 16., 8.]], np.float32),
                  strides=np.array([8., 8.], np.float32), levels=np.zeros(2, np.int32),
                  level_sizes=(2,))
  config = _config('point', 'atss', 'atss')
  config.assigner.topk = 9
  # Prior 0 predicts (0, 0, 12, 8): GIoU 0.6 with the GT; prior 1 predicts the GT exactly.
  box_reg = jnp.array([[[0.5, 0.5, 1.0, 0.5], [1.5, 0.5, 0.5, 0.75]]])
  cls_logits = jnp.array([[[1.0, -1.0], [-2.0, 0.5]]])
  outputs = {'cls_logits': cls_logits, 'box_reg': box_reg,
             'quality_logits': jnp.array([[0.0, 2.0]])}
  total, parts = losses.detection_loss(
      outputs, priors, jnp.array([[[0., 0., 16., 10.]]]), jnp.array([[0]], jnp.int32),
      jnp.array([[True]]), jnp.float32(1.0), config)
  assert parts['num_pos'] == 2
  # Both centres: l, r = 4, 12 (or 12, 4) and t, b = 4, 6: centerness sqrt(1/3 * 2/3).
  ctr = np.sqrt(2 / 9)
  # GIoU losses 0.4 and 0, weighted by the centerness targets over their sum, 0.943, clamped
  # at 1.
  reg = (ctr * 0.4 + ctr * 0.0) / max(2 * ctr, 1.0)
  np.testing.assert_allclose(parts['loss_reg'], reg, rtol=1e-5)
  # BCE towards ctr: logit 0 gives log 2; logit 2 gives softplus(2) - 2 ctr. Over N_pos = 2.
  bce = np.log(2.0) + (np.log1p(np.exp(2.0)) - 2.0 * ctr)
  np.testing.assert_allclose(parts['loss_centerness'], bce / 2, rtol=1e-5)
  # Focal loss, both priors of class 0, over N_pos = 2.
  p = 1 / (1 + np.exp(-np.array([[1.0, -1.0], [-2.0, 0.5]])))
  y = np.array([[1.0, 0.0], [1.0, 0.0]])
  focal = np.where(y == 1, 0.25 * (1 - p)**2 * -np.log(p), 0.75 * p**2 * -np.log(1 - p)).sum()
  np.testing.assert_allclose(parts['loss_cls'], focal / 2, rtol=1e-5)
  np.testing.assert_allclose(total, focal / 2 + 2 * reg + bce / 2, rtol=1e-5)
  assert 'loss_metric' not in parts
