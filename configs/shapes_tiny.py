"""Tiny DLA for the built-in synthetic shapes data: a narrow ResNet-18 at 128 px, CPU-sized."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.backbone = 'resnet18'
  config.model.backbone_width = 32
  # Trained from scratch: nothing frozen, GroupNorm in place of frozen BatchNorm.
  config.model.frozen_stages = -1
  config.model.backbone_norm = 'group_norm'
  config.model.fpn_channels = 64
  config.model.head_channels = 64
  config.model.metric_channels = 64
  config.model.head_convs = 2
  config.model.gn_groups = 16
  config.data.num_classes = 6
  config.data.image_size = (128, 128)
  config.data.max_boxes = 20
  config.train.global_batch = 16
  return config
