"""ATSS, the paper's baseline, ResNet-50-FPN, anchor-free (point priors), 1x schedule on COCO 2017.

The same recipe as ``dla_r50_fpn_1x_coco`` ("all the training hyper-parameters are kept
unchanged"), with ATSS's head, loss and assigner: the centerness branch, GIoU weighted by the
centerness targets, and k = 9 (MMDetection v2's configs/atss/atss_r50_fpn_1x_coco.py,
train_cfg.assigner.topk=9). MMDetection's file of that name is anchor-based:
``atss_r50_fpn_anchor_1x_coco`` here (39.4 AP on val2017 in MMDetection's model zoo).
"""

from dla_jax.configs import default


def atss(config):
  """``config`` turned into ATSS: centerness head and loss, ATSS's assigner with k = 9."""
  config.model.head = 'atss'
  config.assigner.name = 'atss'
  config.assigner.topk = 9
  return config


def get_config():
  return atss(default.get_config())
