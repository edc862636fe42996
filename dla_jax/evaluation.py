"""COCO evaluation with pycocotools: detections back to original image coordinates and dataset
category ids, a results json, and the 12 standard AP/AR numbers."""

import contextlib
import io
import json
from typing import Mapping, Sequence

from etils import epath
import numpy as np
from pycocotools import coco as coco_lib
from pycocotools import cocoeval

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def to_coco_results(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    valid: np.ndarray, image_id: np.ndarray, scale: np.ndarray,
                    real: np.ndarray, category_ids: Sequence[int]) -> list[dict]:
  """COCO result entries for one batch of detections.

  Args:
    boxes: [B, D, 4] (x1, y1, x2, y2) in resized-image pixels.
    scores: [B, D]; labels: [B, D] contiguous class ids; valid: [B, D] bool.
    image_id: [B] dataset image ids; scale: [B, 2] resized / original (y, x); real: [B] bool,
      False for padding examples.
    category_ids: dataset category id of each contiguous label.

  Returns:
    [{'image_id', 'category_id', 'bbox': [x, y, w, h] in original pixels, 'score'}].
  """
  results = []
  for b in np.flatnonzero(real):
    sy, sx = scale[b]
    for d in np.flatnonzero(valid[b]):
      x1, y1, x2, y2 = (boxes[b, d] / np.array([sx, sy, sx, sy])).tolist()
      results.append({'image_id': int(image_id[b]),
                      'category_id': int(category_ids[int(labels[b, d])]),
                      'bbox': [x1, y1, x2 - x1, y2 - y1], 'score': float(scores[b, d])})
  return results


def coco_metrics(ground_truth: coco_lib.COCO, results: list[dict],
                 results_path: str | epath.Path | None = None) -> dict[str, float]:
  """The 12 COCO box metrics of ``results`` against ``ground_truth`` (all its images).

  Writes ``results`` as json to ``results_path`` when given. With no detection at all, every
  metric is 0 (pycocotools cannot load an empty result list).
  """
  if results_path:
    results_path = epath.Path(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results))
  if not results:
    return {name: 0.0 for name in METRIC_NAMES}
  with contextlib.redirect_stdout(io.StringIO()):
    detections = ground_truth.loadRes([dict(r) for r in results])  # loadRes edits entries
    evaluator = cocoeval.COCOeval(ground_truth, detections, 'bbox')
    evaluator.params.imgIds = sorted(ground_truth.getImgIds())
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  # pycocotools reports -1 where a size range has no ground truth; keep it visible as -1.
  return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}


def format_metrics(metrics: Mapping[str, float]) -> str:
  """One line: 'AP 0.512 | AP50 0.801 | ...'."""
  return ' | '.join(f'{k} {v:.3f}' for k, v in metrics.items())
