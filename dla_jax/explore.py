"""What the assigner does for one image: each GT's candidate bag, metric, threshold and
positives, per FPN level, for DLA and for ATSS, at any alpha. The public API behind
``colabs/assignment_explorer.ipynb`` and the figures in ``docs/``.

  model = ...                                    # weights from train/export, or untrained
  look = explore.inspect(config, params, batch_stats, image, boxes, labels, alpha=0.95)
  explore.plot_bags(look, gt=0)                  # matplotlib figure, one panel per level
"""

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from dla_jax import assign
from dla_jax import boxes as box_ops
from dla_jax import step as step_lib
from dla_jax.data import transforms
from dla_jax.models import detector


@dataclasses.dataclass(frozen=True)
class Inspection:
  """The assignment of one image, as numpy arrays (``K`` candidates per GT, ``N`` priors).

  Attributes:
    image: [H, W, 3] uint8, the padded model input.
    boxes: [G, 4] float32, the GTs in input pixels; labels: [G] int32.
    centers: [N, 2] prior centres; levels: [N] FPN level index (0 is P3).
    bags: ``assign.CandidateBags`` of the GTs (fields [G, K], thresholds [G]).
    positive: [N] bool, the priors positive after resolving GTs that claim the same prior.
    gt_index: [N] int32, each positive prior's GT, -1 elsewhere.
    alpha: eq. 2's alpha used; name: 'dla' or 'atss'.
  """
  image: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  centers: np.ndarray
  levels: np.ndarray
  bags: assign.CandidateBags
  positive: np.ndarray
  gt_index: np.ndarray
  alpha: float
  name: str


@functools.partial(jax.jit, static_argnames=('model', 'prior_mode', 'anchor_scale'))
def _forward(params, batch_stats, images, image_hw, *, model, prior_mode, anchor_scale):
  """Compiled once per model and image size, however many inspections use it."""
  priors = step_lib.priors_for(tuple(images.shape[1:3]), anchor_scale)
  outputs = model.apply({'params': params, 'batch_stats': batch_stats}, images, image_hw)
  return (jax.nn.sigmoid(outputs['cls_logits'][0]),
          box_ops.decode(outputs['box_reg'], priors, prior_mode)[0])


def predictions(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
                image: np.ndarray, image_hw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """The model's class probabilities [N, C] and decoded boxes [N, 4] (input pixels) for one
  padded image [H, W, 3] uint8 whose real part is ``image_hw``: what the assigner sees."""
  probs, pred = _forward(params, batch_stats, jnp.asarray(image)[None],
                         jnp.asarray([image_hw], jnp.int32),
                         model=detector.build_detector(config),
                         prior_mode=config.model.prior, anchor_scale=config.model.anchor_scale)
  return np.asarray(probs), np.asarray(pred)


def inspect(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
            image: Image.Image, boxes: np.ndarray, labels: np.ndarray,
            alpha: float, name: str | None = None) -> Inspection:
  """The assignment of ``image`` with GTs ``boxes`` [G, 4] (image pixels) and ``labels`` [G],
  with the model's current predictions, at ``alpha``; ``name`` overrides
  ``config.assigner.name`` ('dla' or 'atss'). The image is rescaled and padded as in
  evaluation."""
  name = name or config.assigner.name
  padded, boxes, size = transforms.eval_input(image, np.asarray(boxes, np.float32),
                                              config.data.scale, config.data.image_size)
  priors = step_lib.priors_for(tuple(padded.shape[:2]), config.model.anchor_scale)
  probs, pred = predictions(config, params, batch_stats, padded, size)
  labels = np.asarray(labels, np.int32)
  args = (priors.anchors, priors.centers, jnp.asarray(boxes), jnp.asarray(labels),
          jnp.ones(len(labels), bool), jnp.asarray(probs), jnp.asarray(pred),
          jnp.float32(alpha))
  static = dict(level_sizes=tuple(priors.level_sizes), topk=config.assigner.topk, name=name)
  bags = jax.tree.map(np.asarray, assign.candidate_bags(*args, **static))
  targets = assign.assign(*args, **static, gamma=config.assigner.gamma,
                          num_classes=config.data.num_classes)
  return Inspection(padded, boxes, labels, np.asarray(priors.centers), np.asarray(priors.levels),
                    bags, np.asarray(targets.positive), np.asarray(targets.gt_index),
                    float(alpha), name)


def plot_bags(look: Inspection, gt: int, axes=None, margin: float = 0.6):
  """Draws GT ``gt``'s candidate bag on the image, one panel per FPN level: candidates coloured
  by the metric m (shared colour scale), positives circled, the GT box, and in each title the
  level, the bag's mean + std threshold and the number of positives. Returns the axes."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (notebooks only)
  levels = np.unique(look.levels)
  if axes is None:
    _, axes = plt.subplots(1, len(levels), figsize=(3 * len(levels), 3.2))
  bags, box = look.bags, look.boxes[gt]
  x1, y1, x2, y2 = box
  pad = margin * max(x2 - x1, y2 - y1)
  bag_levels = look.levels[bags.indices[gt]]
  for ax, level in zip(np.atleast_1d(axes), levels):
    ax.imshow(look.image)
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='white', lw=1.5))
    at = bag_levels == level
    xy = look.centers[bags.indices[gt][at]]
    points = ax.scatter(xy[:, 0], xy[:, 1], c=bags.metrics[gt][at], cmap='viridis', vmin=0,
                        vmax=max(float(bags.metrics[gt].max()), 1e-6), s=28, edgecolors='none')
    chosen = bags.positive[gt][at]
    ax.scatter(xy[chosen, 0], xy[chosen, 1], s=110, facecolors='none', edgecolors='red', lw=1.5)
    ax.set_xlim(x1 - pad, x2 + pad)
    ax.set_ylim(y2 + pad, y1 - pad)
    ax.set_title(f'P{level + 3}: {chosen.sum()} of {at.sum()} positive', fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  np.atleast_1d(axes)[0].set_ylabel(f'{look.name}, alpha {look.alpha:.2f}\n'
                                    f'threshold {bags.thresholds[gt]:.3f}', fontsize=9)
  plt.colorbar(points, ax=np.atleast_1d(axes).tolist(), fraction=0.02, label='metric m')
  return axes


def metric_strip(look: Inspection, gt: int, ax=None):
  """Each candidate of GT ``gt`` as a point: its metric m against its level, the mean + std
  threshold as a line, positives in red, candidates outside the GT hollow. Returns the axes."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (notebooks only)
  if ax is None:
    _, ax = plt.subplots(figsize=(4, 3))
  bags = look.bags
  level = look.levels[bags.indices[gt]] + 3
  jitter = (np.arange(len(level)) % 10) * 0.04 - 0.18  # spread each level's bag sideways
  colour = np.where(bags.positive[gt], 'red', 'tab:blue')
  ax.scatter(level + jitter, bags.metrics[gt], c=colour, s=18,
             alpha=np.where(bags.inside[gt], 1.0, 0.35))
  ax.axhline(bags.thresholds[gt], color='black', lw=1, ls='--', label='mean + std')
  ax.set_xlabel('FPN level (P)')
  ax.set_ylabel('metric m')
  ax.set_title(f'{look.name}, alpha {look.alpha:.2f}', fontsize=9)
  ax.legend(fontsize=8)
  return ax
