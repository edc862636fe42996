"""The summary tool reports the real parameter counts and prior grid of a config."""

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
