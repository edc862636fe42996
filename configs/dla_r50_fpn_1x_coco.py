"""DLA, ResNet-50-FPN, anchor-free, 1x schedule on COCO 2017 (paper: 40.3 AP on val2017)."""

from dla_jax.configs import default


def get_config():
  return default.get_config()
