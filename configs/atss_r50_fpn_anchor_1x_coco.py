"""ATSS, ResNet-50-FPN, anchor-based (one square anchor of 8 strides per location, DeltaXYWH with
stds (0.1, 0.1, 0.2, 0.2)), 1x COCO: MMDetection v2's configs/atss/atss_r50_fpn_1x_coco.py, 39.4
AP on val2017 in its model zoo; the baseline of ``dla_r50_fpn_anchor_1x_coco``."""

from dla_jax.configs import atss_r50_fpn_1x_coco


def get_config():
  config = atss_r50_fpn_1x_coco.get_config()
  config.model.prior = 'anchor'
  return config
