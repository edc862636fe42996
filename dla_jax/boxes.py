"""Box operations: IoU and GIoU, and the encodings of box regression for points and anchors.

Boxes are ``(x1, y1, x2, y2)`` float32 in input pixels. Every function is safe on degenerate
boxes (zero or negative width, all-zero padding): widths are clamped at zero and every
denominator at ``EPS``, so values and gradients stay finite.
"""

import math

import jax.numpy as jnp

from dla_jax.priors import Priors

# Floor of every area in a denominator: a zero-area union or enclosing box gives IoU 0, not NaN.
EPS = 1e-6
# Target stds of the anchor deltas (ATSS / MMDetection's DeltaXYWHBBoxCoder; means are zero).
DELTA_STDS = (0.1, 0.1, 0.2, 0.2)
# Largest |dw|, |dh| when decoding deltas: a box at most 1000/16 times its anchor's side.
DELTA_WH_CLIP = math.log(1000.0 / 16.0)


def box_area(boxes: jnp.ndarray) -> jnp.ndarray:
  """Areas of ``boxes [..., 4]`` -> ``[...]``; an inverted box has area 0."""
  w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return w * h


def _intersection_union(a: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Intersection and union areas of broadcastable boxes ``a [..., 4]``, ``b [..., 4]``."""
  lt = jnp.maximum(a[..., :2], b[..., :2])
  rb = jnp.minimum(a[..., 2:], b[..., 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  return inter, box_area(a) + box_area(b) - inter


def aligned_iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """IoU of matching boxes: ``a [..., 4]``, ``b [..., 4]`` (broadcastable) -> ``[...]``."""
  inter, union = _intersection_union(a, b)
  return inter / jnp.maximum(union, EPS)


def aligned_giou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Generalised IoU of matching boxes (eq. 6's loss is ``1 - GIoU``), ``[..., 4]`` x ``[..., 4]``
  -> ``[...]``.

  ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing both; in
  ``[-1, 1]``, and equal to -1 only for far apart boxes.
  """
  inter, union = _intersection_union(a, b)
  iou = inter / jnp.maximum(union, EPS)
  lt = jnp.minimum(a[..., :2], b[..., :2])
  rb = jnp.maximum(a[..., 2:], b[..., 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  enclose = wh[..., 0] * wh[..., 1]
  return iou - (enclose - union) / jnp.maximum(enclose, EPS)


def box_iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Pairwise IoU: ``a [N, 4]``, ``b [M, 4]`` -> ``[N, M]``."""
  return aligned_iou(a[:, None, :], b[None, :, :])


def box_giou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Pairwise GIoU: ``a [N, 4]``, ``b [M, 4]`` -> ``[N, M]``."""
  return aligned_giou(a[:, None, :], b[None, :, :])


def encode_points(centers: jnp.ndarray, strides: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
  """Distances from each point to its box's sides, in units of the point's stride.

  Args:
    centers: [N, 2] float32, (x, y) in pixels.
    strides: [N] float32.
    boxes: [..., N, 4] float32, (x1, y1, x2, y2) in pixels.

  Returns:
    [..., N, 4] float32 (l, t, r, b) / stride; negative where the point lies outside the box.
  """
  ltrb = jnp.concatenate([centers - boxes[..., :2], boxes[..., 2:] - centers], axis=-1)
  return ltrb / strides[:, None]


def decode_points(centers: jnp.ndarray, strides: jnp.ndarray, ltrb: jnp.ndarray) -> jnp.ndarray:
  """Inverse of ``encode_points``: ``ltrb [..., N, 4]`` in strides -> boxes ``[..., N, 4]``."""
  d = ltrb * strides[:, None]
  return jnp.concatenate([centers - d[..., :2], centers + d[..., 2:]], axis=-1)


def _center_size(boxes: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(cx, cy) and (w, h) of ``boxes [..., 4]``, each ``[..., 2]``."""
  return 0.5 * (boxes[..., :2] + boxes[..., 2:]), boxes[..., 2:] - boxes[..., :2]


def encode_deltas(anchors: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
  """Normalised (dx, dy, dw, dh) of ``boxes`` relative to ``anchors`` (MMDetection's coder).

  Args:
    anchors: [N, 4] float32 with positive sides.
    boxes: [..., N, 4] float32; sides are floored at ``EPS`` so a degenerate box gives a finite
      (very negative) dw, dh instead of -inf.

  Returns:
    [..., N, 4] float32, ``((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph))``
    divided by ``DELTA_STDS``.
  """
  pc, ps = _center_size(anchors)
  gc, gs = _center_size(boxes)
  deltas = jnp.concatenate([(gc - pc) / ps, jnp.log(jnp.maximum(gs, EPS) / ps)], axis=-1)
  return deltas / jnp.asarray(DELTA_STDS, jnp.float32)


def decode_deltas(anchors: jnp.ndarray, deltas: jnp.ndarray) -> jnp.ndarray:
  """Inverse of ``encode_deltas``, with |dw|, |dh| clipped at ``DELTA_WH_CLIP``.

  Args:
    anchors: [N, 4] float32.
    deltas: [..., N, 4] float32, normalised (dx, dy, dw, dh).

  Returns:
    [..., N, 4] float32 boxes (x1, y1, x2, y2).
  """
  d = deltas * jnp.asarray(DELTA_STDS, jnp.float32)
  pc, ps = _center_size(anchors)
  centers = pc + d[..., :2] * ps
  sizes = ps * jnp.exp(jnp.clip(d[..., 2:], -DELTA_WH_CLIP, DELTA_WH_CLIP))
  return jnp.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=-1)


def decode(box_reg: jnp.ndarray, priors: Priors, prior_mode: str) -> jnp.ndarray:
  """Boxes from the head's regression output.

  Args:
    box_reg: [..., N, 4] float32; 'point': (l, t, r, b) in strides, 'anchor': deltas.
    priors: the priors of the image size, in the head's flat order.
    prior_mode: 'point' or 'anchor' (``config.model.prior``).

  Returns:
    [..., N, 4] float32 boxes (x1, y1, x2, y2) in pixels.
  """
  if prior_mode == 'point':
    return decode_points(jnp.asarray(priors.centers), jnp.asarray(priors.strides), box_reg)
  if prior_mode == 'anchor':
    return decode_deltas(jnp.asarray(priors.anchors), box_reg)
  raise ValueError(f"prior_mode must be 'point' or 'anchor', got {prior_mode!r}")
