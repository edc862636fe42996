"""From head outputs to detections, on device with static shapes: decode, per-level top-k,
score threshold, class-wise greedy NMS, at most ``max_detections`` per image.

Test settings follow ATSS (MMDetection's ``test_cfg``): 1000 candidates per level before NMS,
score threshold 0.05, class-wise NMS at IoU 0.6, 100 detections per image.

Ranking (``config.inference.ranking``), with ``q`` the head's quality logit (DLA's metric or
ATSS's centerness):
  'cls_x_quality': a (box, class) pair scores ``p_c * sigmoid(q)``, as ATSS multiplies the
    class score by its centerness (MMDetection's ``score_factors``, applied after the score
    threshold);
  'quality': the paper's wording, the learned metric ranks boxes: a pair that passes the class
    score threshold scores ``sigmoid(q)``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import boxes as boxes_lib
from dla_jax.priors import Priors


class Detections(NamedTuple):
  """Per-image detections, best first; rows past ``valid`` are padding.

  Attributes:
    boxes: [B, D, 4] float32, (x1, y1, x2, y2) in input (resized) pixels, clipped to the image.
    scores: [B, D] float32 ranking scores.
    labels: [B, D] int32 contiguous class ids.
    valid: [B, D] bool.
  """
  boxes: jax.Array
  scores: jax.Array
  labels: jax.Array
  valid: jax.Array


def greedy_nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float,
               max_outputs: int) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS with a fixed number of rounds, for one image.

  Each round keeps the highest-scoring remaining box (the lowest index among equal scores) and
  removes every box overlapping it by more than ``iou_threshold``. The first ``max_outputs``
  boxes greedy NMS keeps do not depend on later ones, so stopping early is exact.

  Args:
    boxes: [K, 4] float32.
    scores: [K] float32; boxes with score -inf are never kept.
    iou_threshold: suppress when IoU > threshold.
    max_outputs: D, number of rounds.

  Returns:
    indices [D] int32 into the K boxes and keep [D] bool (False once nothing is left).
  """
  def round_(i, state):
    live, indices, keep = state
    best = jnp.argmax(live)
    ok = live[best] > -jnp.inf
    iou = boxes_lib.aligned_iou(boxes[best], boxes)
    live = jnp.where(ok & (iou > iou_threshold), -jnp.inf, live).at[best].set(-jnp.inf)
    return live, indices.at[i].set(best.astype(jnp.int32)), keep.at[i].set(ok)

  init = (scores, jnp.zeros(max_outputs, jnp.int32), jnp.zeros(max_outputs, bool))
  _, indices, keep = jax.lax.fori_loop(0, max_outputs, round_, init)
  return indices, keep


def _detect_one(cls_logits: jax.Array, boxes: jax.Array, quality_logits: jax.Array,
                image_hw: jax.Array, level_sizes: tuple[int, ...],
                cfg: ml_collections.ConfigDict) -> Detections:
  """cls_logits [N, C], boxes [N, 4], quality_logits [N], image_hw [2] -> one image's
  detections."""
  num_classes = cls_logits.shape[-1]
  probs = jax.nn.sigmoid(cls_logits)
  quality = jax.nn.sigmoid(quality_logits)[:, None]
  rank = (probs * quality if cfg.ranking == 'cls_x_quality'
          else jnp.broadcast_to(quality, probs.shape))
  rank = jnp.where(probs > cfg.score_threshold, rank, -jnp.inf)

  cand_scores, cand_index = [], []
  start = 0
  for size in level_sizes:
    flat = rank[start:start + size].reshape(-1)
    s, i = jax.lax.top_k(flat, min(cfg.pre_nms_topk, flat.shape[0]))
    cand_scores.append(s)
    cand_index.append(i + start * num_classes)
    start += size
  scores = jnp.concatenate(cand_scores)
  index = jnp.concatenate(cand_index)
  prior, label = index // num_classes, index % num_classes
  h, w = image_hw[0].astype(jnp.float32), image_hw[1].astype(jnp.float32)
  cand_boxes = jnp.clip(boxes[prior], 0.0, jnp.stack([w, h, w, h]))
  # Class-wise NMS as one class-agnostic pass: boxes of different classes are moved apart so
  # they never overlap (torchvision's batched_nms trick).
  offset = (label.astype(jnp.float32) * (jnp.maximum(h, w) + 1.0))[:, None]
  keep_index, keep = greedy_nms(cand_boxes + offset, scores, cfg.nms_iou, cfg.max_detections)
  return Detections(jnp.where(keep[:, None], cand_boxes[keep_index], 0.0),
                    jnp.where(keep, scores[keep_index], 0.0),
                    jnp.where(keep, label[keep_index], 0).astype(jnp.int32), keep)


def detect(outputs: dict[str, jax.Array], image_hw: jax.Array, priors: Priors,
           config: ml_collections.ConfigDict) -> Detections:
  """Batched detections from the head's outputs.

  Args:
    outputs: cls_logits [B, N, C], box_reg [B, N, 4], quality_logits [B, N] (float32).
    image_hw: [B, 2] int32 resized image sizes (boxes are clipped to them).
    priors: priors of the padded input size.
    config: the experiment config (``inference`` and ``model.prior`` are read).

  Returns:
    Detections with D = config.inference.max_detections rows per image.
  """
  cfg = config.inference
  boxes = boxes_lib.decode(outputs['box_reg'], priors, config.model.prior)
  return jax.vmap(lambda c, b, m, hw: _detect_one(c, b, m, hw, priors.level_sizes, cfg))(
      outputs['cls_logits'], boxes, outputs['quality_logits'], image_hw)
