"""DLA, ResNeXt-101 64x4d-FPN, 2x schedule with multi-scale training (paper: 46.5 AP test-dev)."""

from dla_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.backbone = 'resnext101_64x4d'
  config.optim.epochs = 24
  config.optim.decay_epochs = (16, 22)
  config.data.short_side_range = (640, 800)
  return config
