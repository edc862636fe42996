"""Prints a detector's size for a config: parameters per part, priors per level, forward GFLOPs.

  python -m dla_jax.tools.summary --config dla_r50_fpn_1x_coco --config.model.backbone=resnet101

Nothing runs on the device: shapes and costs come from abstract evaluation and XLA's cost model,
so the paper's large models are summarised in seconds on a laptop CPU.
"""

import jax
import jax.numpy as jnp
import ml_collections

from dla_jax import cli
from dla_jax import priors as priors_lib
from dla_jax.models import detector
from dla_jax.models import fpn as fpn_lib

_CONFIG = cli.define_config_flag()


def summarize(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(name, value) rows for one image of ``config.data.image_size``."""
  model = detector.build_detector(config)
  hw = tuple(config.data.image_size)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  rows = [('architecture', f'{config.model.backbone}-FPN, {config.model.head} head, '
                           f'{config.model.prior} priors, {config.data.num_classes} classes, '
                           f'{detector.compute_dtype_name(config)}')]
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  for part, tree in variables['params'].items():
    rows.append((f'params: {part}', f'{count(tree):,}'))
  # What PyTorch counts as parameters: BatchNorm's affine terms are, its statistics are not.
  rows.append(('params: total', f'{count(variables["params"]):,}'))
  rows.append(('BatchNorm constants', f'{count(variables.get("batch_stats", {})):,}'))
  priors = priors_lib.make_priors(hw, fpn_lib.STRIDES, config.model.anchor_scale)
  for level, ((h, w), n) in enumerate(
      zip(priors_lib.feature_sizes(hw, fpn_lib.STRIDES), priors.level_sizes), start=3):
    rows.append((f'P{level} (stride {2**level})', f'{h} x {w} = {n:,} priors'))
  rows.append((f'forward GFLOPs at {hw[0]} x {hw[1]}',
               f'{detector.forward_flops(config) / 1e9:.1f}'))
  return rows


def main(argv):
  del argv
  rows = summarize(_CONFIG.value)
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f'{name:<{width}}  {value}')


if __name__ == '__main__':
  cli.run(main)
