"""The explorer reports what the training assigner does: ATSS's metric is the prior IoU, DLA's
follows eqs. 1 and 3 from the model's own predictions, and every positive prior comes from a
positive in some GT's bag."""

import json
import os

import jax
import numpy as np
from PIL import Image
import pytest

from dla_jax.configs import shapes_tiny
from dla_jax import explore
from dla_jax.models import detector


@pytest.mark.slow
def test_inspection_follows_the_assigner(few_images):
  images, annotations = few_images
  with open(annotations) as f:
    data = json.load(f)
  first = data['images'][0]
  gts = [a for a in data['annotations'] if a['image_id'] == first['id']]
  boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in gts)])
  labels = np.array([(a['category_id'] - 1) // 2 for a in gts])  # ids 1, 3, ..., 11
  image = Image.open(os.path.join(images, first['file_name'])).convert('RGB')
  config = shapes_tiny.get_config()
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  atss = explore.inspect(config, variables['params'], {}, image, boxes, labels, 1.0, 'atss')
  np.testing.assert_allclose(atss.bags.metrics, atss.bags.iou_prior, rtol=1e-6)
  np.testing.assert_allclose(atss.boxes, boxes, rtol=1e-6)  # 128 px images: no rescale

  dla = explore.inspect(config, variables['params'], {}, image, boxes, labels, 0.9, 'dla')
  b = dla.bags
  g = (1 - b.scores) * b.iou_prior + b.scores * b.iou_pred
  np.testing.assert_allclose(b.metrics, 0.1 * b.scores + 0.9 * g, rtol=1e-5, atol=1e-7)
  probs, _ = explore.predictions(config, variables['params'], {}, dla.image, (128, 128))
  np.testing.assert_allclose(b.scores, probs[b.indices, labels[:, None]], rtol=1e-6)
  for look in (atss, dla):
    in_bags = set(look.bags.indices[look.bags.positive].tolist())
    assert look.positive.any() and set(np.flatnonzero(look.positive).tolist()) <= in_bags
    assert (look.gt_index[look.positive] >= 0).all()
