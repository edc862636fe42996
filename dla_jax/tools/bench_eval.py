"""Times COCO evaluation at the val set's scale: 5,000 images x 100 detections, synthetic
detections against a synthetic ground truth, with each backend of ``evaluation.coco_metrics``.

  python -m dla_jax.tools.bench_eval [--num_images 5000]

Per backend: loading the results (``loadRes``) with evaluate, accumulate and summarize, as
``evaluation.evaluate`` runs them; and writing the results json, which evaluation also does.
"""

import functools
import tempfile

from absl import flags
import numpy as np
from pycocotools import coco as coco_lib

from dla_jax import cli
from dla_jax import config_check
from dla_jax import evaluation
from dla_jax.tools import timing

_NUM_IMAGES = flags.DEFINE_integer('num_images', 5000, 'Images of the synthetic ground truth.')


def synthetic_coco(num_images: int, num_categories: int = 80,
                   seed: int = 0) -> tuple[coco_lib.COCO, np.ndarray]:
  """A ground truth of ``num_images`` 640 x 480 images with 1-12 boxes each (COCO has 7.3 on
  average), and 100 detections per image as ``evaluation.to_coco_results`` rows: jittered
  copies of the boxes (a fifth with another category) and random boxes, random scores."""
  rng = np.random.default_rng(seed)
  images, annotations, rows = [], [], []
  for image_id in range(1, num_images + 1):
    images.append({'id': image_id, 'height': 480, 'width': 640})
    n = rng.integers(1, 13)
    wh = rng.uniform(4, 300, (n, 2))
    xy = rng.uniform(0, 1, (n, 2)) * ([640, 480] - wh)
    category = rng.integers(1, num_categories + 1, n)
    for box, c in zip(np.concatenate([xy, wh], 1), category):
      annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                          'category_id': int(c), 'bbox': box.tolist(),
                          'area': float(box[2] * box[3]), 'iscrowd': int(rng.random() < 0.02)})
    copies = rng.integers(0, n, 60)
    jittered = np.concatenate([xy, wh], 1)[copies] * rng.normal(1, 0.1, (60, 4))
    labels = np.where(rng.random(60) < 0.8, category[copies],
                      rng.integers(1, num_categories + 1, 60))
    random_boxes = np.concatenate([rng.uniform(0, 400, (40, 2)), rng.uniform(4, 200, (40, 2))], 1)
    boxes = np.concatenate([jittered, random_boxes])
    labels = np.concatenate([labels, rng.integers(1, num_categories + 1, 40)])
    rows.append(np.column_stack([np.full(100, image_id), boxes, rng.random(100), labels]))
  truth = coco_lib.COCO()
  truth.dataset = {'images': images, 'annotations': annotations,
                   'categories': [{'id': c, 'name': str(c)} for c in range(1, num_categories + 1)]}
  truth.createIndex()
  return truth, np.concatenate(rows)


def main(argv):
  del argv
  truth, results = synthetic_coco(_NUM_IMAGES.value)
  print(f'{_NUM_IMAGES.value} images, {len(truth.dataset["annotations"])} boxes, '
        f'{len(results)} detections\n')
  print('| what | seconds | AP |')
  print('| --- | --- | --- |')
  with tempfile.TemporaryDirectory() as tmp:
    _, seconds = timing.timed(lambda: evaluation.write_results(results, f'{tmp}/results.json'))
    print(f'| write the results json | {seconds:.1f} | |')
  for backend in config_check.CHOICES['evaluation.backend']:
    metrics, seconds = timing.timed(
        functools.partial(evaluation.coco_metrics, truth, results, backend=backend))
    print(f'| {backend}: load, evaluate, accumulate, summarize | {seconds:.1f} | '
          f'{metrics["AP"]:.6f} |')


if __name__ == '__main__':
  cli.run(main)
