"""The detector network: backbone (models.resnet), FPN (models.fpn), DLA head (models.head)."""
