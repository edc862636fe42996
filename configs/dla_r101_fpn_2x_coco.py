"""DLA, ResNet-101-FPN, 2x schedule with multi-scale training on COCO (paper: 44.6 AP)."""

from dla_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.backbone = 'resnet101'
  config.optim.epochs = 24
  config.optim.decay_epochs = (16, 22)
  config.data.short_side_range = (640, 800)
  return config
