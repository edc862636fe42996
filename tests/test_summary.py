"""The summary tool reports the real parameter counts and prior grid of a config."""

from dla_jax.configs import atss_r50_fpn_1x_coco
from dla_jax.configs import shapes_tiny
from dla_jax.tools import summary


def test_summary_counts_match_the_built_model():
  config = shapes_tiny.get_config()
  config.data.image_size = (96, 160)
  config.model.backbone_norm = 'frozen_bn'
  rows = dict(summary.summarize(config))
  assert rows['P3 (stride 8)'] == '12 x 20 = 240 priors'
  assert rows['P7 (stride 128)'] == '1 x 2 = 2 priors'
  # torchvision ResNet-18's conv weights, 11,166,912 (stem 9,408), at half width: the stem (3
  # input channels) halves, every other conv quarters.
  assert rows['params: backbone'] == f'{9_408 // 2 + (11_166_912 - 9_408) // 4:,}'
  assert float(rows['forward GFLOPs at 96 x 160']) > 0


def test_atss_r50_fpn_has_mmdetections_parameter_count():
  """MMDetection v2's ATSS R50-FPN: 32,295,322, 4,918,618 of them in the head (test_detector
  checks the model's own count part by part)."""
  config = atss_r50_fpn_1x_coco.get_config()
  config.data.image_size = config.data.scale = (128, 128)  # the count does not depend on it
  rows = dict(summary.summarize(config))
  assert rows['params: head'] == '4,918,618'
  assert rows['params: total'] == '32,295,322'
  # BatchNorm's running means and variances of ResNet-50 (53,120 channels): constants.
  assert rows['BatchNorm constants'] == f'{2 * 26_560:,}'
