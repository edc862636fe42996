"""Params-only export of a trained model, for inference, ``predict`` and evaluation.

An export folder holds what inference needs and nothing else (no optimizer state, so it is about
half of a training checkpoint with SGD and a third with AdamW):

  weights/       orbax: {'params', 'batch_stats'} in float32
  config.json    the run's config, so that the folder alone builds the model
  classes.json   category id and name of each label (when the run wrote one)
  export.json    the training step it came from

The weights folder is written under a temporary name and renamed when complete, like the
training checkpoints, so a folder that exists is whole.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from dla_jax import train


@dataclasses.dataclass(frozen=True)
class Exported:
  """An export folder, loaded: everything ``predict`` and ``evaluate`` need."""
  config: ml_collections.ConfigDict
  params: Any
  batch_stats: Any
  step: int
  class_names: list[str]  # of each label; 'class <label>' when the run wrote no classes.json


def _tuples(value: Any) -> Any:
  """json lists back to the tuples the configs use (``data.image_size``, ...)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def export(config: ml_collections.ConfigDict, workdir: str, out: str,
           step: int | None = None) -> int:
  """Writes the weights of the checkpoint of ``step`` (default the latest) in ``workdir`` to
  the export folder ``out`` and returns that step.

  Raises:
    FileExistsError: ``out`` exists (an export is never overwritten).
    FileNotFoundError: ``workdir`` has no checkpoint.
  """
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f'--out {out} exists; exports are not overwritten')
  params, batch_stats, step = train.restore_weights(config, workdir, step)
  if jax.process_index() == 0:
    os.makedirs(out)
    with open(os.path.join(out, 'config.json'), 'w') as f:
      f.write(config.to_json(indent=2))
    with open(os.path.join(out, 'export.json'), 'w') as f:
      json.dump({'step': step, 'workdir': os.path.abspath(workdir)}, f)
    classes = os.path.join(workdir, 'classes.json')
    if os.path.exists(classes):
      shutil.copy(classes, out)
  checkpointer = ocp.StandardCheckpointer()
  weights = {'params': params, 'batch_stats': batch_stats}
  checkpointer.save(os.path.join(out, 'weights'), {k: v for k, v in weights.items() if v})
  checkpointer.wait_until_finished()
  return step


def load(path: str) -> Exported:
  """The export folder ``path``, its weights on the first local device.

  Raises:
    FileNotFoundError: ``path`` is not an export folder (names the missing file).
  """
  path = os.path.abspath(path)
  for name in ('config.json', 'export.json', 'weights'):
    if not os.path.exists(os.path.join(path, name)):
      raise FileNotFoundError(f'--weights {path}: not an export folder, {name} is missing')
  with open(os.path.join(path, 'config.json')) as f:
    config = ml_collections.ConfigDict(_tuples(json.load(f)))
  with open(os.path.join(path, 'export.json')) as f:
    step = json.load(f)['step']
  weights = ocp.StandardCheckpointer().restore(os.path.join(path, 'weights'),
                                               train.weights_template(config))
  return Exported(config, weights['params'], weights.get('batch_stats', {}), step,
                  train.read_classes(path, config.data.num_classes))
