"""torchvision's FCOS R50-FPN, the baseline the benchmark times beside dla-jax (no flags).

Its resize is pinned to the config's image size (its transform still normalises and pads), its
classes set to the config's, its test settings (score threshold, NMS IoU, detections per image,
candidates per level) to the config's. Two builds (``VARIANTS``): as built without any weights
(``fcos_resnet50_fpn(weights=None, weights_backbone=None)``: trainable BatchNorm, every stage
trained), or as built for ImageNet weights (frozen BatchNorm, stem and stage 1 frozen: the
recipe dla-jax's COCO configs follow), without loading them. With ``model.dtype='bfloat16'`` it
runs under autocast (bfloat16 on CPU, float16 with a grad scaler on CUDA). torch and
torchvision are an optional extra, imported when a build is asked for.
"""

from typing import Callable

import ml_collections
import numpy as np

VARIANTS = ('no_weights', 'imagenet_recipe')


def build_fcos(variant: str, config: ml_collections.ConfigDict):
  """torchvision's FCOS R50-FPN, resize pinned to the input size, test settings as config."""
  import torchvision  # pylint: disable=g-import-not-at-top  (optional extra)
  from torchvision.models.detection import backbone_utils  # pylint: disable=g-import-not-at-top
  from torchvision.ops import misc  # pylint: disable=g-import-not-at-top
  from torchvision.ops import feature_pyramid_network  # pylint: disable=g-import-not-at-top
  h, w = config.data.image_size
  settings = dict(num_classes=config.data.num_classes, min_size=min(h, w), max_size=max(h, w),
                  score_thresh=config.inference.score_threshold,
                  nms_thresh=config.inference.nms_iou,
                  detections_per_img=config.inference.max_detections,
                  topk_candidates=config.inference.pre_nms_topk)
  if variant == 'no_weights':
    return torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                                          **settings)
  # What fcos_resnet50_fpn builds for ImageNet weights, without loading them.
  resnet = torchvision.models.resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d)
  backbone = backbone_utils._resnet_fpn_extractor(  # pylint: disable=protected-access
      resnet, 3, returned_layers=[2, 3, 4],
      extra_blocks=feature_pyramid_network.LastLevelP6P7(256, 256))
  return torchvision.models.detection.FCOS(backbone, **settings)


def fcos_calls(variant: str, config: ml_collections.ConfigDict,
               batch: dict[str, np.ndarray]) -> dict[str, Callable[[], None]]:
  """FCOS's 'train' step (forward with targets, backward, SGD) and 'infer', each a call that
  waits for its results, on ``batch``'s images [B, H, W, 3] uint8, boxes [B, G, 4] float32
  and 0-based labels [B, G] int32."""
  import torch  # pylint: disable=g-import-not-at-top  (optional extra)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model = build_fcos(variant, config).to(device)
  images = [torch.from_numpy(i).to(device).permute(2, 0, 1).float() / 255 for i in
            batch['images']]
  targets = [{'boxes': torch.from_numpy(b).to(device),
              'labels': torch.from_numpy(l).long().to(device)}  # FCOS's labels are 0-based
             for b, l in zip(batch['boxes'], batch['labels'])]
  bf16 = config.model.dtype == 'bfloat16'
  autocast_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
  autocast = lambda: torch.autocast(device.type, dtype=autocast_dtype, enabled=bf16)
  scaler = torch.amp.GradScaler(device.type, enabled=bf16 and device.type == 'cuda')
  optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              lr=1e-4, momentum=0.9, weight_decay=1e-4)
  sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None

  def train_call():
    model.train()
    with autocast():
      losses = model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(sum(losses.values())).backward()
    scaler.step(optimizer)
    scaler.update()
    sync()

  def infer_call():
    model.eval()
    with torch.no_grad(), autocast():
      model(images)
    sync()

  return {'train': train_call, 'infer': infer_call}


def cuda_peak_bytes(call: Callable[[], None]) -> int:
  """torch's peak CUDA bytes allocated during ``call()``, from a reset peak (what other models
  keep resident counts too)."""
  import torch  # pylint: disable=g-import-not-at-top  (optional extra)
  torch.cuda.reset_peak_memory_stats()
  call()
  return torch.cuda.max_memory_allocated()
