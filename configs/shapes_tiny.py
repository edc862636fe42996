"""Tiny DLA for the built-in synthetic shapes data: a narrow ResNet-18 at 128 px, CPU-sized."""

from dla_jax.configs import default


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
  # At 128 px objects span 8-110 px: anchors of 4 strides (32 px on P3 ... 512 px on P7) spread
  # them over P3-P5, where 8 strides would put nearly all of them on P3.
  config.model.anchor_scale = 4.0
  # float32 on every backend, so that its results reproduce anywhere
  # (docs/reproduction.md#float32-and-bfloat16-2026-12-02).
  config.model.dtype = 'float32'
  # The recipe its figures were measured with, so that they reproduce
  # (docs/reproduction.md#the-coco-recipe-against-mmdetections): a ReLU before P7, every image
  # trained on (some shapes images have no object), warm-up from 1/3. The COCO recipe has none
  # of the three (default.py).
  config.model.fpn_relu_before_p7 = True
  config.data.filter_empty_gt = False
  config.optim.warmup_ratio = 1.0 / 3.0
  config.data.source = 'shapes'
  config.data.num_classes = 6
  config.data.image_size = (128, 128)
  config.data.scale = (128, 128)
  config.data.short_side_range = (128, 128)
  config.data.max_boxes = 20
  # Two threads in the training process load 128 px shapes many times faster than the step
  # takes them (docs/performance.md#input-pipeline); no worker processes to start.
  config.data.num_workers = 0
  config.data.num_threads = 2
  # From scratch on a CPU budget: AdamW converges in far fewer steps than the COCO recipe's SGD,
  # and lr 3e-3 was the best of those tried (docs/reproduction.md#the-shapes-recipes-optimiser).
  # 11 epochs of 4000 images fit a CPU's budget (the time: docs/performance.md#the-main-job).
  config.optim.name = 'adamw'
  config.optim.base_lr = 3e-3
  config.optim.warmup_steps = 300
  config.optim.epochs = 11
  config.optim.decay_epochs = (9, 10.5)
  config.train.global_batch = 16
  config.train.log_every = 250
  config.train.require_accelerator = False
  return config
