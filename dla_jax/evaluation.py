"""COCO evaluation: detections back to original image coordinates and dataset category ids, a
results json, and the 12 standard AP/AR numbers.

Detections travel as one ``[n, 7]`` array (image id, x, y, w, h, score, category id), the form
pycocotools' ``loadRes`` reads directly, rather than as a dict per detection (5,000 COCO val
images x 100 detections are 500,000 of them). ``evaluation.backend`` picks pycocotools (the
default and the reference) or faster-coco-eval (the ``fast-eval`` extra), which gives the same
12 numbers, faster (docs/performance.md).
"""

import contextlib
import io
from typing import Mapping, Sequence

from etils import epath
import numpy as np
from pycocotools import coco as coco_lib
from pycocotools import cocoeval

from dla_jax import errors

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


BACKENDS = ('pycocotools', 'faster_coco_eval')


def to_coco_results(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    valid: np.ndarray, image_id: np.ndarray, scale: np.ndarray,
                    real: np.ndarray, category_ids: Sequence[int]) -> np.ndarray:
  """COCO results of one batch of detections, as rows of pycocotools' numpy form.

  Args:
    boxes: [B, D, 4] (x1, y1, x2, y2) in resized-image pixels.
    scores: [B, D]; labels: [B, D] contiguous class ids; valid: [B, D] bool.
    image_id: [B] dataset image ids; scale: [B, 2] resized / original (y, x); real: [B] bool,
      False for padding examples.
    category_ids: dataset category id of each contiguous label.

  Returns:
    [n, 7] float64: image id, x, y, w, h (original pixels), score, category id; one row per
    valid detection of a real example, image by image, best first.
  """
  keep = valid & np.asarray(real, bool)[:, None]
  b, _ = np.nonzero(keep)
  sy, sx = np.asarray(scale, np.float64)[b].T
  x1, y1, x2, y2 = (boxes[keep].astype(np.float64) / np.stack([sx, sy, sx, sy], -1)).T
  category = np.asarray(category_ids, np.float64)[labels[keep]]
  return np.stack([np.asarray(image_id, np.float64)[b], x1, y1, x2 - x1, y2 - y1,
                   scores[keep].astype(np.float64), category], axis=-1).reshape(-1, 7)


def write_results(results: np.ndarray, path: str | epath.Path) -> None:
  """``results`` (``to_coco_results``' rows) as a COCO results json."""
  rows = ','.join(
      f'{{"image_id":{int(r[0])},"category_id":{int(r[6])},"bbox":[{r[1]!r},{r[2]!r},{r[3]!r},'
      f'{r[4]!r}],"score":{r[5]!r}}}' for r in results.tolist())
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f'[{rows}]')


def coco_metrics(ground_truth: coco_lib.COCO, results: np.ndarray,
                 results_path: str | epath.Path | None = None,
                 backend: str = 'pycocotools') -> dict[str, float]:
  """The 12 COCO box metrics of ``results`` (``to_coco_results``' rows) against
  ``ground_truth`` (all its images), computed by ``backend`` (one of ``BACKENDS``).

  Writes ``results`` as json to ``results_path`` when given. With no detection at all, every
  metric is 0 (pycocotools cannot load an empty result list).
  """
  if backend not in BACKENDS:
    raise errors.ConfigError(f'evaluation.backend: {backend!r} is not one of {BACKENDS}')
  if results_path:
    write_results(results, results_path)
  if not len(results):
    return {name: 0.0 for name in METRIC_NAMES}
  with contextlib.redirect_stdout(io.StringIO()):
    if backend == 'pycocotools':
      detections = ground_truth.loadRes(results)
      evaluator = cocoeval.COCOeval(ground_truth, detections, 'bbox')
    else:
      faster = _faster_coco_eval()
      truth = faster.COCO(ground_truth.dataset)
      evaluator = faster.COCOeval_faster(truth, truth.loadRes(results), 'bbox')
    evaluator.params.imgIds = sorted(ground_truth.getImgIds())
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  # pycocotools reports -1 where a size range has no ground truth; keep it visible as -1.
  return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}


def _faster_coco_eval():
  try:
    import faster_coco_eval  # pylint: disable=g-import-not-at-top  (an optional extra)
  except ImportError as e:
    raise errors.ConfigError("evaluation.backend: 'faster_coco_eval' needs the package: "
                             "pip install -e '.[fast-eval]'") from e
  return faster_coco_eval


def format_metrics(metrics: Mapping[str, float]) -> str:
  """One line: 'AP 0.512 | AP50 0.801 | ...'."""
  return ' | '.join(f'{k} {v:.3f}' for k, v in metrics.items())
