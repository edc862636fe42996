"""Training losses: DLA's (paper, section 3.3) and ATSS's, on the same assignment code.

``detection_loss`` runs the batched assigner on stop-gradient predictions and combines three
terms as eq. 8, ``L = cls_weight * L_cls + reg_weight * L_reg + quality_weight * L_quality``.
``model.head`` picks the terms after the shared focal loss (eq. 4):

- 'dla': GIoU weighted by ``w = m ** gamma`` (eqs. 5-6) and the metric loss (eq. 7);
- 'atss': ATSS's (Zhang et al., CVPR 2020; MMDetection v2's ``ATSSHead.loss``): GIoU weighted by
  each positive's centerness target, and the binary cross-entropy of the centerness branch
  towards that target on positives.

Normalisers. ``L_cls`` and the quality loss are divided by the number of positives ``N_pos``,
``L_reg`` by the sum of its weights (``sum(w)``, or the sum of centerness targets), both over the
whole batch and both clamped at 1 as ATSS / MMDetection do (``reduce_mean(...).clamp_(min=1)``),
so a batch without positives has a finite loss (then only the background terms, divided by 1).
The loss is computed under ``jax.jit`` on the global batch, sharded over the devices (with
``mesh``, only the assigner runs per device), so these sums are already global: they play the
part of MMDetection's ``reduce_mean`` over devices, and the loss equals the loss of the same
batch on one device.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import assign as assign_lib
from dla_jax import boxes as box_ops
from dla_jax.priors import Priors


def _bce_with_logits(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """``BCE(sigmoid(logits), targets)`` elementwise, stable for any logit."""
  return jax.nn.softplus(logits) - targets * logits


def focal_loss(logits: jnp.ndarray, targets: jnp.ndarray, alpha: float,
               gamma: float) -> jnp.ndarray:
  """Sigmoid focal loss (eq. 4; Lin et al. 2017), elementwise and unreduced.

  Args:
    logits: [..., C] float32 class logits.
    targets: [..., C] float32 in {0, 1}: one-hot of the assigned class, zeros for background.
    alpha: weight of the positive term (``config.loss.focal_alpha``).
    gamma: focusing exponent (``config.loss.focal_gamma``).

  Returns:
    [..., C] float32, ``-alpha_t (1 - p_t) ** gamma log(p_t)``.
  """
  p = jax.nn.sigmoid(logits)
  p_t = p * targets + (1.0 - p) * (1.0 - targets)
  alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
  return alpha_t * (1.0 - p_t)**gamma * _bce_with_logits(logits, targets)


def giou_loss(pred_boxes: jnp.ndarray, target_boxes: jnp.ndarray) -> jnp.ndarray:
  """``1 - GIoU``, the loss eq. 6 weights, elementwise over ``[..., 4]`` boxes -> ``[...]``, in
  ``[0, 2]``."""
  return 1.0 - box_ops.aligned_giou(pred_boxes, target_boxes)


def metric_loss(logits: jnp.ndarray, targets: jnp.ndarray, beta: float) -> jnp.ndarray:
  """Eq. 7: ``|c - m| ** beta * BCE(c, m)`` with ``c = sigmoid(logits)``, elementwise.

  On positives the target is the assignment metric ``m``; on negatives it is 0, where the same
  expression is eq. 7's negative branch ``c ** beta * BCE(c, 0)``.

  Args:
    logits: [...] float32 metric logits.
    targets: [...] float32 in [0, 1]: ``m`` on positives, 0 on negatives.
    beta: modulating exponent (``config.loss.metric_beta``).

  Returns:
    [...] float32.
  """
  c = jax.nn.sigmoid(logits)
  return jnp.abs(c - targets)**beta * _bce_with_logits(logits, targets)


def centerness_targets(centers: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
  """ATSS's centerness of a point in a box (MMDetection v2 ``ATSSHead.centerness_target``).

  With ``l, t, r, b`` the distances from the point to the box's sides,
  ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``: 1 at the box centre, towards 0 at
  its border.

  Args:
    centers: [..., 2] float32 points (x, y), the priors' centres.
    boxes: [..., 4] float32 (x1, y1, x2, y2) boxes that contain their point.

  Returns:
    [...] float32 in [0, 1]; 0 where a point is on or outside its box's border.
  """
  lr = jnp.stack([centers[..., 0] - boxes[..., 0], boxes[..., 2] - centers[..., 0]], -1)
  tb = jnp.stack([centers[..., 1] - boxes[..., 1], boxes[..., 3] - centers[..., 1]], -1)
  ratio = lambda d: jnp.maximum(d.min(-1), 0.0) / jnp.maximum(d.max(-1), 1e-12)
  return jnp.sqrt(ratio(lr) * ratio(tb))


def _dla_terms(outputs: dict[str, jnp.ndarray], pred_boxes: jnp.ndarray,
               targets: assign_lib.Assignment, beta: float
               ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """DLA's regression and metric terms, unnormalised: (sum of ``w * GIoU loss`` (eq. 6),
  ``sum(w)``, sum of eq. 7 over every location)."""
  reg = (targets.reg_weights * giou_loss(pred_boxes, targets.box_targets)).sum()
  quality = metric_loss(outputs['quality_logits'], targets.metric_targets, beta).sum()
  return reg, targets.reg_weights.sum(), quality


def _atss_terms(outputs: dict[str, jnp.ndarray], pred_boxes: jnp.ndarray,
                targets: assign_lib.Assignment, centers: jnp.ndarray
                ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """ATSS's regression and centerness terms, unnormalised: (sum of ``centerness * GIoU loss``,
  sum of centerness targets, sum of the centerness BCE over positives)."""
  positive = targets.positive
  weights = jnp.where(positive, centerness_targets(centers, targets.box_targets), 0.0)
  reg = (weights * giou_loss(pred_boxes, targets.box_targets)).sum()
  bce = _bce_with_logits(outputs['quality_logits'], weights)
  return reg, weights.sum(), jnp.where(positive, bce, 0.0).sum()


def detection_loss(outputs: dict[str, jnp.ndarray],
                   priors: Priors,
                   gt_boxes: jnp.ndarray,
                   gt_labels: jnp.ndarray,
                   gt_valid: jnp.ndarray,
                   alpha: jnp.ndarray,
                   config: ml_collections.ConfigDict,
                   mesh: Optional[jax.sharding.Mesh] = None,
                   ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Eq. 8 on a batch: assigns labels from the (stop-gradient) predictions, then the loss of
  ``config.model.head`` (see the module docstring).

  Args:
    outputs: the head's float32 outputs, ``cls_logits [B, N, C]``, ``box_reg [B, N, 4]``
      (point: l, t, r, b in strides; anchor: deltas) and ``quality_logits [B, N]`` (the
      metric, or the centerness).
    priors: the priors of the padded image size, host arrays (closed over, not traced).
    gt_boxes: [B, G, 4] float32, (x1, y1, x2, y2) in pixels.
    gt_labels: [B, G] int32 classes in ``[0, C)``.
    gt_valid: [B, G] bool, False for padding.
    alpha: [] float32 from ``assign.alpha_schedule`` (eq. 2).
    config: the experiment config (``model.prior``, ``model.head``, ``assigner``, ``loss``).
    mesh: under ``jax.jit`` over a mesh with the batch split on its first axis: the assigner
      runs on each device's own images (``assign.per_device``).

  Returns:
    The total loss ``[]`` and a dict of ``[]`` float32 metrics: ``loss``, ``loss_cls``,
    ``loss_reg``, ``loss_metric`` ('dla') or ``loss_centerness`` ('atss'), ``num_pos``
    (positives in the batch) and ``alpha``.
  """
  cls_logits = outputs['cls_logits']
  num_classes = cls_logits.shape[-1]
  pred_boxes = box_ops.decode(outputs['box_reg'], priors, config.model.prior)
  a = config.assigner
  assign_batch = functools.partial(
      assign_lib.assign_batch, level_sizes=tuple(priors.level_sizes), topk=a.topk, gamma=a.gamma,
      num_classes=num_classes, name=a.name)
  if mesh is not None:
    assign_batch = assign_lib.per_device(assign_batch, mesh, mesh.axis_names[0])
  targets = assign_batch(
      jnp.asarray(priors.anchors), jnp.asarray(priors.centers), gt_boxes, gt_labels, gt_valid,
      jax.lax.stop_gradient(jax.nn.sigmoid(cls_logits)), jax.lax.stop_gradient(pred_boxes),
      alpha)

  c = config.loss
  if config.model.head == 'atss':
    quality_name = 'loss_centerness'
    reg, sum_w, quality = _atss_terms(outputs, pred_boxes, targets, jnp.asarray(priors.centers))
  else:
    quality_name = 'loss_metric'
    reg, sum_w, quality = _dla_terms(outputs, pred_boxes, targets, c.metric_beta)
  num_pos = targets.positive.sum().astype(jnp.float32)
  pos_norm = jnp.maximum(num_pos, 1.0)
  reg_norm = jnp.maximum(sum_w, 1.0)

  cls_targets = jax.nn.one_hot(targets.labels, num_classes, dtype=cls_logits.dtype)
  loss_cls = focal_loss(cls_logits, cls_targets, c.focal_alpha, c.focal_gamma).sum() / pos_norm
  loss_reg = reg / reg_norm
  loss_quality = quality / pos_norm
  total = c.cls_weight * loss_cls + c.reg_weight * loss_reg + c.quality_weight * loss_quality
  metrics = {'loss': total, 'loss_cls': loss_cls, 'loss_reg': loss_reg,
             quality_name: loss_quality, 'num_pos': num_pos,
             'alpha': jnp.asarray(alpha, jnp.float32)}
  return total, metrics
