"""Priors: one point and one square anchor per feature-map location, for a static image size.

The head's outputs are concatenated level by level (P3 first), each level in row-major (y, x)
order; the priors here follow the same flat order, so prior ``i`` and head output ``i`` describe
the same location.

Centres sit at ``((x + 0.5) * stride, (y + 0.5) * stride)``: the middle of the input pixels the
location covers. Every location carries one square anchor of side ``anchor_scale * stride``
(ATSS: octave base scale 8, one aspect ratio), which is the prior box of DLA's ``IoU_prior`` in
both the anchor-free and the anchor-based head.
"""

from typing import NamedTuple, Sequence

import numpy as np


class Priors(NamedTuple):
  """Priors for one padded image size; every array is host numpy, fixed before tracing.

  Attributes:
    centers: [N, 2] float32, (x, y) in input pixels.
    anchors: [N, 4] float32, (x1, y1, x2, y2) square anchors in input pixels.
    strides: [N] float32, the stride of each prior's level.
    levels: [N] int32, FPN level index (0 for P3 ... 4 for P7).
    level_sizes: number of priors on each level, in level order; ``sum(level_sizes) == N``.
  """
  centers: np.ndarray
  anchors: np.ndarray
  strides: np.ndarray
  levels: np.ndarray
  level_sizes: tuple[int, ...]


def feature_sizes(image_hw: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
  """(height, width) of each level's feature map for an input of ``image_hw``.

  Every stride-2 layer (3x3 or 7x7 conv with symmetric padding, or 3x3 max-pool with padding 1)
  maps a side ``n`` to ``ceil(n / 2)``, so a level of stride ``2**k`` has side ``n`` halved ``k``
  times with rounding up. Strides must be powers of two.
  """
  sizes = []
  for stride in strides:
    if stride < 1 or stride & (stride - 1):
      raise ValueError(f'model.strides: {stride} is not a power of two')
    h, w = image_hw
    for _ in range(int(stride).bit_length() - 1):
      h, w = -(-h // 2), -(-w // 2)
    sizes.append((h, w))
  return sizes


def make_priors(image_hw: Sequence[int], strides: Sequence[int], anchor_scale: float) -> Priors:
  """Builds the priors of every level for a padded input of ``image_hw`` = (height, width)."""
  centers, strides_flat, levels, level_sizes = [], [], [], []
  for level, (stride, (h, w)) in enumerate(zip(strides, feature_sizes(image_hw, strides))):
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    c = (np.stack([xs.ravel(), ys.ravel()], axis=-1) + 0.5) * stride
    centers.append(c)
    strides_flat.append(np.full(h * w, stride))
    levels.append(np.full(h * w, level))
    level_sizes.append(h * w)
  centers = np.concatenate(centers).astype(np.float32)
  strides_flat = np.concatenate(strides_flat).astype(np.float32)
  half = (0.5 * anchor_scale * strides_flat)[:, None]
  anchors = np.concatenate([centers - half, centers + half], axis=-1).astype(np.float32)
  return Priors(centers, anchors, strides_flat, np.concatenate(levels).astype(np.int32),
                tuple(level_sizes))
