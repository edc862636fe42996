"""DLA, ResNet-50-FPN, anchor-based (one square anchor per location, delta encoding), 1x COCO."""

from dla_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.prior = 'anchor'
  return config
