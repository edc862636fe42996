"""Dynamic Label Assignment (paper, section 3; eqs. 1-3) on fixed shapes; ATSS as a special case.

For every ground truth (GT) box the assigner

1. takes the ``topk`` priors nearest to the GT's centre on each FPN level (L2 distance between
   centres; ``k`` is clipped to the level's size) as the GT's candidate bag,
2. scores each candidate with the assignment metric (eqs. 1 and 3)::

     g = (1 - s) * IoU_prior + s * IoU_pred
     m = (1 - alpha) * s + alpha * g

   where ``s`` is the predicted probability of the GT's class at the prior, ``IoU_prior`` the
   IoU of the prior's square anchor with the GT and ``IoU_pred`` that of the predicted box,
3. keeps the candidates with ``m >= mean(m) + std(m)`` over the bag whose prior centre lies
   inside the GT,
4. gives a prior kept by several GTs to the one with the highest ``m``.

Everything else is background. ``alpha`` follows eq. 2 (``alpha_schedule``) and is a traced
scalar, so a new value never recompiles. With ``name='atss'`` the assigner uses ``s = 0`` and
``alpha = 1``, hence ``m = IoU_prior``: ATSS's assigner (Zhang et al., CVPR 2020) exactly, so the
baseline trains through the same code as DLA.

Shapes are fixed for an image size: ``N`` priors, ``G`` padded GT slots (``data.max_boxes``),
``C`` classes and the bag size ``K = sum_l min(topk, N_l)``. The work is ``[G, N_l]`` distances
per level and ``[G, K]`` metrics; no ``[N, G, C]`` (or ``[N, G]`` metric) tensor is built.
"""

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from dla_jax import boxes as box_ops

# ATSS keeps a candidate only if its centre is more than this many pixels inside every side.
INSIDE_MARGIN = 0.01


class CandidateBags(NamedTuple):
  """Each GT's candidates and their metric, for one image (``K = sum_l min(topk, N_l)``).

  Attributes:
    indices: [G, K] int32, prior indices of the bag, level by level, nearest first per level.
    iou_prior: [G, K] float32, IoU of the candidate's anchor with the GT.
    iou_pred: [G, K] float32, IoU of the candidate's predicted box with the GT (0 for ATSS).
    scores: [G, K] float32, ``s``: predicted probability of the GT's class (0 for ATSS).
    metrics: [G, K] float32, ``m`` of eq. 1.
    thresholds: [G] float32, ``mean(m) + std(m)`` over the bag.
    inside: [G, K] bool, the candidate's centre is inside the GT.
    positive: [G, K] bool, ``m >= threshold``, inside, and the GT is real (``gt_valid``).
  """
  indices: jnp.ndarray
  iou_prior: jnp.ndarray
  iou_pred: jnp.ndarray
  scores: jnp.ndarray
  metrics: jnp.ndarray
  thresholds: jnp.ndarray
  inside: jnp.ndarray
  positive: jnp.ndarray


class Assignment(NamedTuple):
  """Training targets of every prior, for one image (or ``[B, ...]`` from ``assign_batch``).

  Attributes:
    labels: [N] int32, the matched GT's class in ``[0, C)``; ``C`` (= num_classes) for
      background, so ``jax.nn.one_hot(labels, C)`` is the classification target.
    gt_index: [N] int32, the matched GT slot in ``[0, G)``; -1 for background.
    box_targets: [N, 4] float32, the matched GT box (x1, y1, x2, y2) in pixels; 0 for background.
    metric_targets: [N] float32, ``m`` with the matched GT; 0 for background.
    reg_weights: [N] float32, ``w = m ** gamma`` (eq. 5); 0 for background.
    positive: [N] bool.
  """
  labels: jnp.ndarray
  gt_index: jnp.ndarray
  box_targets: jnp.ndarray
  metric_targets: jnp.ndarray
  reg_weights: jnp.ndarray
  positive: jnp.ndarray


def _nearest_per_level(centers: jnp.ndarray, gt_boxes: jnp.ndarray, level_sizes: Sequence[int],
                       topk: int) -> jnp.ndarray:
  """Indices [G, K] of the ``min(topk, N_l)`` priors nearest to each GT centre on every level.

  Squared distances rank the same as distances; ``lax.top_k`` breaks ties towards the lower
  index. Each level is a static slice, so the largest intermediate is ``[G, N_l]``.
  """
  gt_centers = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])
  bags, start = [], 0
  for size in level_sizes:
    level = centers[start:start + size]
    dx = gt_centers[:, None, 0] - level[None, :, 0]
    dy = gt_centers[:, None, 1] - level[None, :, 1]
    _, nearest = jax.lax.top_k(-(dx * dx + dy * dy), min(topk, size))
    bags.append(nearest + start)
    start += size
  return jnp.concatenate(bags, axis=1).astype(jnp.int32)


def candidate_bags(anchors: jnp.ndarray,
                   centers: jnp.ndarray,
                   gt_boxes: jnp.ndarray,
                   gt_labels: jnp.ndarray,
                   gt_valid: jnp.ndarray,
                   cls_probs: Optional[jnp.ndarray],
                   pred_boxes: Optional[jnp.ndarray],
                   alpha: jnp.ndarray,
                   *,
                   level_sizes: Sequence[int],
                   topk: int,
                   name: str = 'dla') -> CandidateBags:
  """Per-GT candidate bags, metrics, thresholds and positives for one image (steps 1-3).

  Args:
    anchors: [N, 4] float32, each prior's square anchor (``Priors.anchors``).
    centers: [N, 2] float32, each prior's centre (x, y) (``Priors.centers``).
    gt_boxes: [G, 4] float32, (x1, y1, x2, y2) in pixels; padded slots may hold anything finite.
    gt_labels: [G] int32 classes in ``[0, C)``; padded slots may hold anything.
    gt_valid: [G] bool, True for real GTs; padded GTs never get a positive.
    cls_probs: [N, C] float32 predicted class probabilities (no gradient). Unused for 'atss'
      (may be None).
    pred_boxes: [N, 4] float32 decoded predicted boxes (no gradient). Unused for 'atss'.
    alpha: [] float32, eq. 2's weight of the geometric term; unused for 'atss' (there 1).
    level_sizes: static, number of priors per level in the flat order (``Priors.level_sizes``).
    topk: static, candidates per level (``config.assigner.topk``).
    name: static, 'dla' or 'atss' (``config.assigner.name``).

  Returns:
    The ``CandidateBags`` of the image.
  """
  anchors, centers = jnp.asarray(anchors), jnp.asarray(centers)
  indices = _nearest_per_level(centers, gt_boxes, level_sizes, topk)
  gt = gt_boxes[:, None, :]
  iou_prior = box_ops.aligned_iou(anchors[indices], gt)
  if name == 'atss':
    scores = iou_pred = jnp.zeros_like(iou_prior)
    alpha = 1.0
  else:
    # Gather the GT class column at the candidates only: [G, K], never [N, G, C].
    classes = jnp.clip(gt_labels, 0, cls_probs.shape[-1] - 1)
    scores = cls_probs[indices, classes[:, None]]
    iou_pred = box_ops.aligned_iou(pred_boxes[indices], gt)
  quality = (1.0 - scores) * iou_prior + scores * iou_pred  # eq. 3
  metrics = (1.0 - alpha) * scores + alpha * quality  # eq. 1
  # ATSS's code thresholds with torch's default, unbiased std (ddof=1) and keeps m >= threshold;
  # the paper's text says "greater than". A single-candidate bag (K = 1) uses ddof=0.
  ddof = 1 if indices.shape[1] > 1 else 0
  thresholds = metrics.mean(axis=1) + metrics.std(axis=1, ddof=ddof)
  c = centers[indices]
  sides = jnp.stack([c[..., 0] - gt[..., 0], c[..., 1] - gt[..., 1],
                     gt[..., 2] - c[..., 0], gt[..., 3] - c[..., 1]], axis=-1)
  inside = sides.min(axis=-1) > INSIDE_MARGIN
  positive = (metrics >= thresholds[:, None]) & inside & gt_valid[:, None]
  return CandidateBags(indices, iou_prior, iou_pred, scores, metrics, thresholds, inside,
                       positive)


def assign(anchors: jnp.ndarray,
           centers: jnp.ndarray,
           gt_boxes: jnp.ndarray,
           gt_labels: jnp.ndarray,
           gt_valid: jnp.ndarray,
           cls_probs: Optional[jnp.ndarray],
           pred_boxes: Optional[jnp.ndarray],
           alpha: jnp.ndarray,
           *,
           level_sizes: Sequence[int],
           topk: int,
           gamma: float,
           num_classes: int,
           name: str = 'dla') -> Assignment:
  """Labels and targets of every prior for one image (DLA, or ATSS with ``name='atss'``).

  Arguments are those of ``candidate_bags``, plus ``gamma`` (static, ``w = m ** gamma``, eq. 5)
  and ``num_classes`` (static, ``C``: the background label). A prior positive for several GTs
  goes to the one with the highest ``m`` (the lowest GT slot on an exact tie), resolved with
  scatter-max on ``[N]`` from the ``[G, K]`` positives.

  Returns:
    The ``Assignment`` of the image, every field ``[N]`` (``box_targets`` ``[N, 4]``).
  """
  bags = candidate_bags(anchors, centers, gt_boxes, gt_labels, gt_valid, cls_probs, pred_boxes,
                        alpha, level_sizes=level_sizes, topk=topk, name=name)
  num_priors, num_gts = centers.shape[0], gt_boxes.shape[0]
  flat = bags.indices.reshape(-1)
  claims = jnp.where(bags.positive, bags.metrics, -jnp.inf).reshape(-1)
  best = jnp.full((num_priors,), -jnp.inf, jnp.float32).at[flat].max(claims)
  positive = best > -jnp.inf
  slots = jnp.broadcast_to(jnp.arange(num_gts, dtype=jnp.int32)[:, None], bags.indices.shape)
  wins = (claims > -jnp.inf) & (claims == best[flat])
  winner = jnp.full((num_priors,), num_gts, jnp.int32).at[flat].min(
      jnp.where(wins, slots.reshape(-1), num_gts))
  gt_index = jnp.where(positive, winner, -1)
  matched = jnp.minimum(winner, num_gts - 1)
  metric_targets = jnp.where(positive, best, 0.0)
  return Assignment(
      labels=jnp.where(positive, gt_labels[matched], num_classes).astype(jnp.int32),
      gt_index=gt_index,
      box_targets=jnp.where(positive[:, None], gt_boxes[matched], 0.0),
      metric_targets=metric_targets,
      reg_weights=jnp.where(positive, metric_targets**gamma, 0.0),  # eq. 5
      positive=positive)


def assign_batch(anchors: jnp.ndarray,
                 centers: jnp.ndarray,
                 gt_boxes: jnp.ndarray,
                 gt_labels: jnp.ndarray,
                 gt_valid: jnp.ndarray,
                 cls_probs: Optional[jnp.ndarray],
                 pred_boxes: Optional[jnp.ndarray],
                 alpha: jnp.ndarray,
                 **static) -> Assignment:
  """``assign`` over a batch: GTs ``[B, G, ...]``, predictions ``[B, N, ...]``, one ``alpha``.

  ``static`` holds ``assign``'s keyword arguments. Returns an ``Assignment`` with fields
  ``[B, N]`` (``box_targets`` ``[B, N, 4]``).
  """
  one_image = functools.partial(assign, **static)
  return jax.vmap(one_image, in_axes=(None, None, 0, 0, 0, 0, 0, None))(
      anchors, centers, gt_boxes, gt_labels, gt_valid, cls_probs, pred_boxes, alpha)


def per_device(assign_fn: Callable, mesh: jax.sharding.Mesh, axis: str) -> Callable:
  """``assign_fn`` (``assign_batch``'s signature) run by each device on its own slice of the
  batch (``jax.shard_map`` over ``axis``): assignment is per image, so no device needs another's
  images. Left to itself, XLA's partitioner replicates the top-k candidate selection over the
  whole global batch, gathering every image's distances ``[B, G, N_level]`` onto every
  device (``dla_jax.tools.step_cost`` lists the collectives)."""
  batch = P(axis)
  return jax.shard_map(assign_fn, mesh=mesh, in_specs=(P(), P()) + (batch,) * 5 + (P(),),
                       out_specs=batch)


def alpha_schedule(step: jnp.ndarray, steps_per_epoch: int, config: ml_collections.ConfigDict,
                   total_epochs: int) -> jnp.ndarray:
  """Eq. 2: ``alpha(t) = (1 - alpha0) * exp(-t / sqrt(T)) + alpha0``, ``T`` = total epochs.

  Args:
    step: [] int, the optimiser step (may be traced).
    steps_per_epoch: static, optimiser steps per epoch.
    config: ``config.assigner``. ``alpha_schedule`` 'epoch' counts whole epochs as the paper
      (``t = step // steps_per_epoch``), 'continuous' fractional ones, 'fixed' holds
      ``fixed_alpha`` (Table 2's ablation). ATSS (``name='atss'``) is alpha = 1.
    total_epochs: static, ``T``.

  Returns:
    [] float32 alpha: 1 at the start, decaying towards ``alpha0``.
  """
  if config.name == 'atss':
    return jnp.float32(1.0)
  if config.alpha_schedule == 'fixed':
    return jnp.float32(config.fixed_alpha)
  step = jnp.asarray(step)
  if config.alpha_schedule == 'epoch':
    t = (step // steps_per_epoch).astype(jnp.float32)
  else:  # 'continuous'
    t = step.astype(jnp.float32) / steps_per_epoch
  alpha0 = config.alpha0
  return (1.0 - alpha0) * jnp.exp(-t / math.sqrt(total_epochs)) + alpha0
