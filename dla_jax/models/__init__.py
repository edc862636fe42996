"""The detector network: backbone (models.resnet), FPN (models.fpn), head (models.head), the
whole detector with its input and frozen parameters (models.detector), and ImageNet weights
(models.pretrained)."""
