"""The whole detector, built from a config: its input (ImageNet normalisation of uint8 pixels),
backbone -> FPN -> head (DLA's or ATSS's), its initial weights, and which of them are frozen.

How its convolutions and ResNet blocks compute on this backend is ``dla_jax.cpu``'s decision;
``build_detector`` asks it once. Configs are checked by ``dla_jax.config_check`` before a
detector is built.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import cpu
from dla_jax.models import fpn as fpn_lib
from dla_jax.models import head as head_lib
from dla_jax.models import pretrained
from dla_jax.models import resnet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# ImageNet statistics of RGB pixels in 0..255 (the torchvision / MMDetection values).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def normalize(images: jax.Array, image_hw: jax.Array) -> jax.Array:
  """ImageNet-normalises a batch and zeroes the padding (MMDetection's order).

  Args:
    images: [B, H, W, 3] RGB pixels in 0..255 (uint8 from the input pipeline, which sends a
      quarter of float32's bytes to the devices), each image in its top-left corner.
    image_hw: [B, 2] int32, the (height, width) of each image before padding.

  Returns:
    [B, H, W, 3] float32, ``(pixel - mean) / std`` inside each image and 0 in the padding.
  """
  x = (images.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  _, h, w, _ = images.shape
  inside = ((jnp.arange(h)[None, :, None] < image_hw[:, 0, None, None]) &
            (jnp.arange(w)[None, None, :] < image_hw[:, 1, None, None]))
  return jnp.where(inside[..., None], x, 0.0)


class Detector(nn.Module):
  """Backbone, FPN and head; parameter subtrees ``backbone``, ``fpn`` and ``head``."""
  backbone: resnet.ResNet
  fpn: fpn_lib.FPN
  head: head_lib.DetectionHead

  def __call__(self, images: jax.Array, image_hw: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """The head's outputs (cls_logits [B, N, C], box_reg [B, N, 4], quality_logits [B, N],
    float32) for a padded batch.

    Args:
      images: [B, H, W, 3] RGB pixels in 0..255, H and W multiples of 32, each image in its
        top-left corner (``normalize``).
      image_hw: [B, 2] int32 (height, width) of each image before padding; None when the
        images fill the batch.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'images must be [batch, height, width, 3] (NHWC, RGB); got shape '
                       f'{tuple(images.shape)}')
    if image_hw is None:
      image_hw = jnp.broadcast_to(jnp.asarray(images.shape[1:3], jnp.int32), (len(images), 2))
    return self.head(self.fpn(self.backbone(normalize(images, image_hw))))

  def trainable(self, params: Any) -> Any:
    """Pytree of bools over ``params``: False for the backbone's frozen stages (the stem and
    stages 1..frozen_stages, which get no gradient), True elsewhere."""

    def trainable(path, _):
      keys = [k.key for k in path]
      return keys[0] != 'backbone' or resnet.stage_of(keys[1]) > self.backbone.frozen_stages

    return jax.tree_util.tree_map_with_path(trainable, params)


def compute_dtype_name(config: ml_collections.ConfigDict, backend: str | None = None) -> str:
  """``model.dtype`` on ``backend`` (default JAX's): 'auto' is bfloat16 on GPU and TPU, float32
  on the CPU, whose convolutions have no bfloat16 kernels."""
  name = config.model.dtype
  if name == 'auto':
    return 'float32' if (backend or jax.default_backend()) == 'cpu' else 'bfloat16'
  return name


def compute_dtype(config: ml_collections.ConfigDict, backend: str | None = None) -> Any:
  return DTYPES[compute_dtype_name(config, backend)]


def build_detector(config: ml_collections.ConfigDict, backend: str | None = None) -> Detector:
  """The detector of ``config.model`` for ``config.data.num_classes`` classes, as computed on
  ``backend`` ('cpu', 'gpu' or 'tpu'; default JAX's own), with ``dla_jax.cpu.model_options``.
  ``dla_jax.tools.step_cost`` builds a GPU's graph on the CPU."""
  m = config.model
  dtype = compute_dtype(config, backend)
  options = cpu.model_options(m, backend)
  return Detector(
      backbone=resnet.ResNet(m.backbone, m.backbone_width, m.frozen_stages, m.backbone_norm,
                             m.gn_groups, dtype, options.conv, options.block_output),
      fpn=fpn_lib.FPN(m.fpn_channels, m.fpn_relu_before_p7, dtype, options.conv),
      head=head_lib.DetectionHead(config.data.num_classes, m.head_channels, m.head_convs,
                                  m.gn_groups, m.metric_channels, len(fpn_lib.STRIDES), m.prior,
                                  m.prior_prob, m.head, dtype, options.conv))


def forward_flops(config: ml_collections.ConfigDict) -> float:
  """FLOPs of the network's forward pass on one image of ``config.data.image_size``, as direct
  convolutions compute them: counted by XLA's cost model through its own convolutions,
  whatever ``model.conv_impl`` picks on this backend (Winograd does fewer)."""
  counted = config.copy_and_resolve_references()
  counted.model.conv_impl = 'xla'
  model = build_detector(counted)
  images = jax.ShapeDtypeStruct((1, *config.data.image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return jax.jit(model.apply).lower(variables, images).cost_analysis()['flops']


def abstract_variables(model: Detector) -> dict[str, Any]:
  """Shapes and dtypes of ``init_variables``'s result (``jax.ShapeDtypeStruct`` leaves), without
  computing or reading anything."""
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def init_variables(config: ml_collections.ConfigDict, rng: jax.Array) -> dict[str, Any]:
  """Initial ``{'params', 'batch_stats'}`` of ``build_detector(config)``, float32; the
  backbone's are read from ``config.model.backbone_init`` when it is set: an orbax folder written
  by ``dla-import-torchvision`` or a torchvision ``state_dict`` file (read with torch).

  They are drawn through the float32 model with XLA's own convolutions, whatever
  ``model.conv_impl`` and ``model.dtype`` say: neither changes a variable's name, shape or
  value, so every variant of an architecture shares one compiled init (its random draws, one per
  parameter, are most of a detector's compile time on the CPU). Parameter shapes do not depend
  on the image size, so a small dummy image is used.

  Raises:
    ConfigError: naming ``model.backbone_init`` and the file when they cannot be read or do not
      fit.
  """
  m = config.model
  backbone = {}
  if m.backbone_init:  # read before the compile, so that a wrong file is reported at once
    backbone = pretrained.norm_layout(
        pretrained.read_backbone(m.backbone_init, m.backbone, m.backbone_width), m.backbone_norm)
  drawn = config.copy_and_resolve_references()
  drawn.model.conv_impl, drawn.model.dtype = 'xla', 'float32'
  variables = jax.jit(build_detector(drawn).init)(rng, jnp.zeros((1, 64, 64, 3), jnp.float32))
  for collection, tree in backbone.items():
    variables[collection]['backbone'] = tree
  return variables
