"""A plain NumPy DLA assigner written from the paper's section 3, one GT at a time.

It shares no code with ``dla_jax.assign``: it is the specification the jitted assigner is tested
against. Conventions follow ATSS's code where the paper is silent: ``m >= mean + std`` with the
unbiased std, a centre is inside a GT if it is more than 0.01 px from every side, and a prior
kept by several GTs goes to the highest ``m`` (the first GT on a tie).

Distances are computed in float32 with the same arithmetic as the jitted version, so the
candidate bags (which depend on exact ranks) are identical; everything after that is float64.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class GtBag:
  """One GT's candidates: prior indices, their metric, the threshold and inside margins."""
  indices: np.ndarray
  metrics: np.ndarray
  threshold: float
  margins: np.ndarray
  positive: np.ndarray


@dataclasses.dataclass
class ReferenceAssignment:
  positive: np.ndarray  # [N] bool
  gt_index: np.ndarray  # [N] int, -1 for background
  metric_targets: np.ndarray  # [N] float64, 0 for background
  claims: list  # per prior: list of (m, gt) for every GT that kept it
  bags: list  # per GT: GtBag, None for padding


def iou(a, b):
  """IoU of two boxes (x1, y1, x2, y2); 0 when the union is empty."""
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  area = lambda r: max(r[2] - r[0], 0.0) * max(r[3] - r[1], 0.0)
  union = area(a) + area(b) - inter
  return inter / union if union > 0 else 0.0


def reference_assign(anchors, centers, level_sizes, gt_boxes, gt_labels, gt_valid, cls_probs,
                     pred_boxes, alpha, topk=10, atss=False):
  """Assigns the priors of one image; ``atss=True`` uses s = 0 and alpha = 1 (m = IoU_prior)."""
  centers = np.asarray(centers, np.float32)
  gt_boxes32 = np.asarray(gt_boxes, np.float32)
  n = len(centers)
  claims = [[] for _ in range(n)]
  bags = []
  for j in range(len(gt_boxes32)):
    if not gt_valid[j]:  # padding: not a GT at all
      bags.append(None)
      continue
    box = gt_boxes32[j]
    cx = np.float32(0.5) * (box[0] + box[2])
    cy = np.float32(0.5) * (box[1] + box[3])
    # Step 1: on each level, the topk priors nearest to the GT's centre.
    candidates, start = [], 0
    for size in level_sizes:
      dx = cx - centers[start:start + size, 0]
      dy = cy - centers[start:start + size, 1]
      order = np.argsort(dx * dx + dy * dy, kind='stable')
      candidates.extend(start + order[:min(topk, size)])
      start += size
    # Step 2: the metric of every candidate.
    metrics = []
    for i in candidates:
      iou_prior = iou(np.float64(anchors[i]), np.float64(gt_boxes[j]))
      if atss:
        s, a, iou_pred = 0.0, 1.0, 0.0
      else:
        s, a = float(cls_probs[i, gt_labels[j]]), float(alpha)
        iou_pred = iou(np.float64(pred_boxes[i]), np.float64(gt_boxes[j]))
      g = (1 - s) * iou_prior + s * iou_pred
      metrics.append((1 - a) * s + a * g)
    metrics = np.array(metrics)
    # Step 3: statistical threshold and the centre-inside test.
    threshold = metrics.mean() + metrics.std(ddof=1)
    margins = np.array([min(centers[i, 0] - box[0], centers[i, 1] - box[1],
                            box[2] - centers[i, 0], box[3] - centers[i, 1])
                        for i in candidates])
    positive = (metrics >= threshold) & (margins > 0.01)
    for i, m, p in zip(candidates, metrics, positive):
      if p:
        claims[i].append((m, j))
    bags.append(GtBag(np.array(candidates), metrics, threshold, margins, positive))
  # Step 4: a prior kept by several GTs goes to the one with the highest metric.
  gt_index = np.full(n, -1)
  metric_targets = np.zeros(n)
  for i in range(n):
    for m, j in claims[i]:
      if gt_index[i] < 0 or m > metric_targets[i]:
        gt_index[i], metric_targets[i] = j, m
  return ReferenceAssignment(gt_index >= 0, gt_index, metric_targets, claims, bags)
