"""Params-only export of a trained model (``--mode export --format params``), for inference,
``predict`` and evaluation with this package. (The other kind, ``--format stablehlo``, is
``export_stablehlo``.)

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
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from dla_jax import checkpoint
from dla_jax import errors
from dla_jax import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class ParamsExport:
  """A params export folder, loaded: everything ``predict`` and ``evaluate`` need."""
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
    FlagError: ``out`` exists (an export is never overwritten), or ``workdir`` has no
      checkpoint.
  """
  folder = workdir_lib.path(out)
  if folder.exists():
    raise errors.FlagError(f'--out {folder} exists; exports are not overwritten')
  params, batch_stats, step = checkpoint.restore_weights(config, workdir, step)
  if jax.process_index() == 0:
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(config.to_json(indent=2))
    (folder / 'export.json').write_text(json.dumps(
        {'step': step, 'workdir': str(workdir_lib.path(workdir))}))
    classes = workdir_lib.path(workdir) / 'classes.json'
    if classes.exists():
      (folder / 'classes.json').write_text(classes.read_text())
  checkpointer = ocp.StandardCheckpointer()
  weights = {'params': params, 'batch_stats': batch_stats}
  checkpointer.save(folder / 'weights', {k: v for k, v in weights.items() if v})
  checkpointer.wait_until_finished()
  return step


def load(path: str) -> ParamsExport:
  """The params export folder ``path``, its weights on the first local device.

  Raises:
    FlagError: ``path`` is not an export folder (names the missing file).
  """
  folder = workdir_lib.path(path)
  for name in ('config.json', 'export.json', 'weights'):
    if not (folder / name).exists():
      raise errors.FlagError(f'--weights {folder}: not an export folder, {name} is missing')
  config = ml_collections.ConfigDict(_tuples(json.loads((folder / 'config.json').read_text())))
  step = json.loads((folder / 'export.json').read_text())['step']
  weights = ocp.StandardCheckpointer().restore(folder / 'weights',
                                               checkpoint.weights_template(config))
  return ParamsExport(config, weights['params'], weights.get('batch_stats', {}), step,
                      checkpoint.read_classes(str(folder), config.data.num_classes))
