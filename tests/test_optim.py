"""The COCO recipe's learning rate is MMDetection v2's schedule_1x, step for step."""

import numpy as np

from dla_jax.configs import atss_r50_fpn_1x_coco
from dla_jax.configs import dla_r50_fpn_1x_coco
from dla_jax import optim


def _mmdetection_1x_lr(step: int, steps_per_epoch: int) -> float:
  """mmcv's StepLrUpdaterHook with linear warm-up: lr 0.01 (16 images), warmup_iters=500,
  warmup_ratio=0.001, step=[8, 11]; the warm-up factor is 1 - (1 - i / 500) * (1 - 0.001)."""
  regular = 0.01 * 0.1**sum(step >= e * steps_per_epoch for e in (8, 11))
  if step >= 500:
    return regular
  return regular * (1 - (1 - step / 500) * (1 - 0.001))


def test_dla_and_atss_coco_configs_follow_mmdetection_schedule_1x():
  steps_per_epoch = 7330  # 117,266 training images with annotations / 16
  for config in (dla_r50_fpn_1x_coco.get_config(), atss_r50_fpn_1x_coco.get_config()):
    schedule = optim.learning_rate(config, steps_per_epoch)
    steps = [0, 1, 250, 499, 500, 501, 8 * steps_per_epoch - 1, 8 * steps_per_epoch,
             11 * steps_per_epoch, 12 * steps_per_epoch - 1]
    # float32 schedule against float64 formula: 1 - 0.999 * (1 - p) is 1e-3 computed from
    # numbers near 1, exact to about 2e-5 in float32.
    np.testing.assert_allclose([float(schedule(s)) for s in steps],
                               [_mmdetection_1x_lr(s, steps_per_epoch) for s in steps],
                               rtol=5e-5)
