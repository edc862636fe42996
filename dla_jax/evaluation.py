"""COCO evaluation: ``evaluate`` runs a model over a split on the devices; its detections go back
to original image coordinates and dataset category ids, into a results json, and to the 12
standard AP/AR numbers.

Detections travel as one ``[n, 7]`` array (image id, x, y, w, h, score, category id), the form
pycocotools' ``loadRes`` reads directly, rather than as a dict per detection (5,000 COCO val
images x 100 detections are 500,000 of them). ``evaluation.backend`` picks pycocotools (the
default and the reference) or faster-coco-eval (the ``fast-eval`` extra), which gives the same
12 numbers, faster (docs/performance.md).
"""

import contextlib
import dataclasses
import io
import time
from typing import Any, Callable, Mapping, Sequence

from etils import epath
import jax
import ml_collections
import numpy as np
from pycocotools import coco as coco_lib
from pycocotools import cocoeval

from dla_jax import checkpoint
from dla_jax import config_check
from dla_jax import errors
from dla_jax import metric_writer
from dla_jax import step as step_lib
from dla_jax import workdir as workdir_lib
from dla_jax.data import pipeline
from dla_jax.data import prefetch
from dla_jax.models import detector

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
# What pairs each detection with its image: sharded like the images, gathered like the
# detections, so row i of both is the same example whatever the order of devices and processes.
EVAL_META_FIELDS = ('image_id', 'scale', 'real')


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
  ``ground_truth`` (all its images), computed by ``backend`` ('pycocotools' or 'faster_coco_eval').

  Writes ``results`` as json to ``results_path`` when given. With no detection at all, every
  metric is 0 (pycocotools cannot load an empty result list).
  """
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


@dataclasses.dataclass(frozen=True)
class EvalSteps:
  """Evaluation's jitted functions over the devices, built once so that a run with several
  evaluations compiles each of them once per input shape."""
  mesh: jax.sharding.Mesh
  detect: Callable  # (params, batch_stats, batch) -> replicated detections
  gather: Callable  # batch fields sharded like the images -> replicated

  @classmethod
  def build(cls, config: ml_collections.ConfigDict) -> 'EvalSteps':
    mesh = step_lib.make_mesh()
    model = detector.build_detector(config)
    return cls(mesh, step_lib.jit_eval_step(mesh, model=model, config=config),
               jax.jit(lambda meta: meta, out_shardings=step_lib.replicated(mesh)))


def evaluate(config: ml_collections.ConfigDict, workdir: str, params: Any = None,
             batch_stats: Any = None, step: int | None = None,
             split: str = 'val') -> dict[str, float]:
  """COCO metrics of the model on ``split``; weights from ``params`` or the checkpoint of
  ``step`` (default the latest) in ``workdir``. Checks ``config`` first
  (``config_check.check``), then runs ``evaluate_weights``."""
  config_check.check(config, jax.device_count(), jax.process_count(), training=False)
  workdir_lib.check_writable(workdir)
  eval_steps = EvalSteps.build(config)
  if params is None:
    params, batch_stats, step = checkpoint.restore_weights(config, workdir, step)
  return evaluate_weights(config, workdir, params, batch_stats, step, eval_steps, split)


def evaluate_weights(config: ml_collections.ConfigDict, workdir: str, params: Any,
                     batch_stats: Any, step: int, eval_steps: EvalSteps,
                     split: str = 'val') -> dict[str, float]:
  """COCO metrics on ``split`` of the given weights, for a ``config`` already checked and a
  writable ``workdir`` (as in a training run, which passes its ``eval_steps`` to reuse their
  compilations). Writes the detections as a COCO results json and the metrics to
  ``workdir``."""
  mesh = eval_steps.mesh
  eval_iter, dataset = pipeline.make_eval_iterator(config, split,
                                                   global_batch=config.train.eval_batch)
  checkpoint.write_classes(workdir, dataset)
  eval_step, gather = eval_steps.detect, eval_steps.gather
  sharding = step_lib.batch_sharding(mesh)
  params, batch_stats = jax.device_put((params, batch_stats), step_lib.replicated(mesh))
  results = []  # [n, 7] arrays, one per batch
  start = time.time()
  for batch in eval_iter:
    # Image ids fit int32 (checked when the dataset is read); JAX computes in 32 bits.
    batch['image_id'] = batch['image_id'].astype(np.int32)
    on_device = prefetch.put_global_batch(batch, sharding,
                                          step_lib.EVAL_FIELDS + EVAL_META_FIELDS)
    detections, meta = jax.device_get((
        eval_step(params, batch_stats, {k: on_device[k] for k in step_lib.EVAL_FIELDS}),
        gather({k: on_device[k] for k in EVAL_META_FIELDS})))
    results.append(to_coco_results(*detections, **meta,
                                   category_ids=dataset.category_ids))
  seconds = time.time() - start
  metrics = {}
  if jax.process_index() == 0:
    path = workdir_lib.path(workdir) / f'detections_{split}_step{step}.json'
    metrics = coco_metrics(dataset.coco, np.concatenate(results), path,
                           config.evaluation.backend)
    print(f'{split} at step {step}: {format_metrics(metrics)} '
          f'({len(dataset.records)} images, {seconds:.1f} s)', flush=True)
    writer = metric_writer.MetricWriter(workdir)
    writer.write(step or 0, metrics, split=split)
    writer.close()
  return metrics
