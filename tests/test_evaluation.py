"""COCO evaluation: mapping back to original coordinates and category ids, and AP values."""

import json

import numpy as np
from pycocotools import coco as coco_lib

from dla_jax import evaluation
from dla_jax.tools import bench_eval


def _ground_truth():
  gt = coco_lib.COCO()
  gt.dataset = {
      'images': [{'id': 7, 'height': 200, 'width': 400}, {'id': 9, 'height': 200, 'width': 400}],
      'categories': [{'id': 3, 'name': 'a'}, {'id': 8, 'name': 'b'}],
      'annotations': [
          {'id': 1, 'image_id': 7, 'category_id': 3, 'bbox': [10, 20, 100, 60], 'area': 6000,
           'iscrowd': 0},
          {'id': 2, 'image_id': 9, 'category_id': 8, 'bbox': [200, 50, 80, 120], 'area': 9600,
           'iscrowd': 0}]}
  gt.createIndex()
  return gt


def _batch(boxes_resized):
  """Two images resized by 0.5; one detection each (labels 0 -> id 3, 1 -> id 8)."""
  boxes = np.zeros((3, 2, 4), np.float32)
  boxes[:2, 0] = boxes_resized
  scores = np.array([[0.9, 0], [0.8, 0], [0.7, 0]], np.float32)
  labels = np.array([[0, 0], [1, 0], [1, 0]])
  valid = np.array([[True, False], [True, False], [True, False]])
  return dict(boxes=boxes, scores=scores, labels=labels, valid=valid,
              image_id=np.array([7, 9, 0]), scale=np.full((3, 2), 0.5, np.float32),
              real=np.array([True, True, False]))


def test_perfect_detections_in_resized_pixels_score_ap_1(tmp_path):
  batch = _batch([[5, 10, 55, 40], [100, 25, 140, 85]])
  results = evaluation.to_coco_results(**batch, category_ids=[3, 8])
  assert results.shape == (2, 7)  # the padding example's detection is dropped
  np.testing.assert_allclose(results, [[7, 10, 20, 100, 60, 0.9, 3],
                                       [9, 200, 50, 80, 120, 0.8, 8]], rtol=1e-6)
  metrics = evaluation.coco_metrics(_ground_truth(), results, str(tmp_path / 'r.json'))
  assert len(metrics) == 12
  assert metrics['AP'] > 0.99 and metrics['AR100'] > 0.99
  written = json.loads((tmp_path / 'r.json').read_text())
  assert [(r['image_id'], r['category_id']) for r in written] == [(7, 3), (9, 8)]
  np.testing.assert_array_equal([r['bbox'] + [r['score']] for r in written], results[:, 1:6])


def test_shifted_detections_lose_strict_iou_thresholds():
  # Image 7's box shifted by 15 px in original pixels: IoU 0.64 -> counts at 0.5, not at 0.75.
  batch = _batch([[12.5, 10, 62.5, 40], [100, 25, 140, 85]])
  metrics = evaluation.coco_metrics(_ground_truth(),
                                    evaluation.to_coco_results(**batch, category_ids=[3, 8]))
  assert metrics['AP50'] > 0.99
  assert 0.3 < metrics['AP'] < 0.9
  assert metrics['AP75'] < 0.6


def test_no_detections_gives_zero_metrics():
  assert set(evaluation.coco_metrics(_ground_truth(), np.zeros((0, 7))).values()) == {0.0}


def test_faster_coco_eval_gives_the_pycocotools_numbers():
  truth, results = bench_eval.synthetic_coco(60, num_categories=5)
  reference = evaluation.coco_metrics(truth, results)
  faster = evaluation.coco_metrics(truth, results, backend='faster_coco_eval')
  assert 0.05 < reference['AP'] < 0.95  # a case with something to get right
  assert faster.keys() == reference.keys()
  for name in reference:
    assert abs(faster[name] - reference[name]) <= 1e-6, (name, faster[name], reference[name])
