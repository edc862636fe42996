"""The trained detector as serialized StableHLO (``jax.export``): ``--mode export --format
stablehlo``, loaded and run by ``dla_jax.serving`` without this package's model code. (The
other kind, ``--format params``, is ``export_params``.)

The folder:

  deploy.json          format and version, platforms, the preprocessing contract, class names,
                       the program of each padded shape
  program_<H>x<W>.bin  one padded shape's inference, for every platform in the file: (weights,
                       images [b, H, W, 3] uint8, image_hw [b, 2] int32) -> boxes [b, D, 4]
                       (x1, y1, x2, y2 in resized pixels), scores [b, D], classes [b, D] int32
                       and counts [b] int32, after NMS as ``inference.detect`` does; b is
                       symbolic, any batch size runs
  weights.npz          the weights, float32, ``w0`` ... in the programs' argument order

The weights sit beside the programs, not inside them: both orientations' programs share one
copy (inside, each would embed its own, 130 MB for R50-FPN), and the programs stay small (417
KB each for R50-FPN), quick to write and to read.

One graph for every platform: XLA's own convolutions, without the CPU's fusion barriers. It
computes in float32 unless ``model.dtype`` is 'bfloat16' ('auto' means float32 here, as the
program may run on a CPU). The folder is written under a temporary name and renamed when
complete, so a folder that exists is whole.
"""

import json
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from dla_jax import errors
from dla_jax import serving
from dla_jax import step as step_lib
from dla_jax import workdir as workdir_lib
from dla_jax.data import transforms
from dla_jax.models import detector

PLATFORMS = ('cpu', 'cuda', 'tpu')


def portable_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with the portable graph's settings (see the module doc)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.conv_impl = 'xla'
  if config.model.dtype == 'auto':
    config.model.dtype = 'float32'
  return config


def inference_function(config: ml_collections.ConfigDict, treedef) -> Callable:
  """(weight leaves, images, image_hw) -> {'boxes', 'scores', 'classes', 'counts'}."""
  model = detector.build_detector(config, backend='tpu')  # the portable graph

  def infer(leaves, images, image_hw):
    weights = jax.tree.unflatten(treedef, leaves)
    detections = step_lib.eval_step(weights['params'], weights.get('batch_stats', {}),
                                    {'images': images, 'image_hw': image_hw}, model=model,
                                    config=config)
    return {'boxes': detections.boxes, 'scores': detections.scores,
            'classes': detections.labels,
            'counts': detections.valid.sum(axis=-1, dtype=jnp.int32)}

  return infer


def padded_shapes(image_size: Sequence[int]) -> list[tuple[int, int]]:
  """The padded (height, width) of each orientation, landscape first (one when square)."""
  shapes = [transforms.padded_shape(True, image_size), transforms.padded_shape(False, image_size)]
  return list(dict.fromkeys(shapes))


def export(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
           class_names: Sequence[str], out: str, step: int,
           platforms: Sequence[str] = PLATFORMS) -> dict:
  """Writes the folder ``out`` (see the module doc); returns its manifest.

  Raises:
    FlagError: ``out`` exists (an export is never overwritten).
  """
  folder = workdir_lib.path(out)
  if folder.exists():
    raise errors.FlagError(f'--out {folder} exists; exports are not overwritten')
  config = portable_config(config)
  weights = {k: v for k, v in (('params', params), ('batch_stats', batch_stats)) if v}
  leaves, treedef = jax.tree.flatten(jax.device_get(weights))
  infer = jax.jit(inference_function(config, treedef))
  batch, = jax_export.symbolic_shape('b')
  leaf_specs = [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]
  tmp = folder.with_name(f'.{folder.name}.tmp-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  programs = {}
  start = time.perf_counter()
  for h, w in padded_shapes(config.data.image_size):
    exported = jax_export.export(infer, platforms=tuple(platforms))(
        leaf_specs, jax.ShapeDtypeStruct((batch, h, w, 3), jnp.uint8),
        jax.ShapeDtypeStruct((batch, 2), jnp.int32))
    name = f'program_{h}x{w}.bin'
    (tmp / name).write_bytes(exported.serialize())
    programs[f'{h}x{w}'] = name
  np.savez(tmp / serving.WEIGHTS, **{f'w{i}': np.asarray(x) for i, x in enumerate(leaves)})
  manifest = {
      'format': serving.FORMAT, 'version': serving.VERSION, 'step': step,
      'platforms': list(platforms), 'programs': programs, 'num_weights': len(leaves),
      'class_names': list(class_names), 'compute_dtype': config.model.dtype,
      'max_detections': config.inference.max_detections,
      'preprocessing': {
          'scale': list(config.data.scale),
          'padded_hw_landscape': list(config.data.image_size),
          'resize': 'keep the aspect ratio, largest size within scale (long, short), each side '
                    'rounded to the nearest pixel; bilinear (Pillow)',
          'orientation': 'landscape (width >= height) pads to padded_hw_landscape, portrait to '
                         'its transpose',
          'padding': 'zeros at the bottom and right',
          'inputs': 'images [b, H, W, 3] uint8 RGB; image_hw [b, 2] int32, the resized '
                    '(height, width); normalisation is inside the program',
          'outputs': 'boxes in resized pixels: multiply x by width / resized width and y by '
                     'height / resized height for the original image',
      },
      'export_seconds': time.perf_counter() - start,
  }
  (tmp / serving.MANIFEST).write_text(json.dumps(manifest, indent=1))
  tmp.rename(folder)
  return manifest
