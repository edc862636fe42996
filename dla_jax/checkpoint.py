"""Checkpoints of a run in ``workdir/checkpoints``: the train state and the input position.

orbax's CheckpointManager writes each step into a temporary folder and renames it when complete
(atomic), asynchronously so that training goes on while the files are written, and keeps the
last ``keep``. The input iterator's position is saved beside the state as json, so a resumed run
sees exactly the batches it would have seen.

Every process of a run resumes from the same step. Process 0 lists the steps, newest first;
each process reads a step on its own (into host memory, so that one that fails cannot leave the
others waiting in orbax's restore barrier), and all of them take the first step that every one
of them could read. A checkpoint damaged on one host sends every process to the step before it,
never that host alone.

Inference reads weights alone (``restore_weights``, into ``weights_template``) and the label
names a run wrote beside its checkpoints (``write_classes``, ``read_classes``).
"""

import json
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import ml_collections
import orbax.checkpoint as ocp

from dla_jax import errors
from dla_jax import workdir as workdir_lib
from dla_jax.models import detector


class Checkpoints:
  """Save and restore of (train state, input iterator state) by step."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = str(workdir_lib.path(workdir) / 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.PyTreeCheckpointHandler(type_handler_registry=_handlers()),
                       'data': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None) -> None:
    """Starts writing ``state`` (and the iterator position) as ``step``; returns at once."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data_state or {})),
        force=True)

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict, int] | None:
    """(state, iterator state, step) of ``step``, laid out like ``template`` (arrays, or
    ``jax.ShapeDtypeStruct``s, with shardings); None when there is no checkpoint.

    Without ``step``, the newest checkpoint every process can read: one that cannot be read
    (truncated or corrupt files) is reported and every process tries the one before it, so a
    damaged last save does not put a preempted job into a crash loop.

    Raises:
      ValueError: ``step`` was asked for and cannot be read, or no checkpoint can be read.
    """
    steps = [step] if step is not None else _steps_of_process_0(self._manager)
    on_host = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template)
    reader = _single_process_reader(self.directory)
    try:
      for s in steps:
        try:
          restored = reader.restore(s, args=ocp.args.Composite(
              state=ocp.args.PyTreeRestore(
                  item=on_host,
                  restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                            on_host)),
              data=ocp.args.JsonRestore()))
          error = None
        except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
          restored, error = None, f'{type(e).__name__}: {e}'
          print(f'checkpoint {s} in {self.directory} cannot be read on process '
                f'{jax.process_index()}: {error}', flush=True)
        failed = _processes_that_failed(error is None)
        if not failed:
          state = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding),
                               restored['state'], template)
          return state, dict(restored['data'] or {}), s
        message = (f'checkpoint {s} in {self.directory} cannot be read'
                   f'{f" on processes {failed}" if jax.process_count() > 1 else ""}')
        if step is not None:
          raise ValueError(f'{message}: {error}' if error else message)
        if jax.process_index() == 0:
          print(f'{message}; every process tries the one before it', flush=True)
    finally:
      reader.close()
    if steps:
      raise ValueError(f'no checkpoint in {self.directory} can be read (steps {steps})')
    return None

  def restore_weights(self, template: dict[str, Any],
                      step: int | None = None) -> tuple[dict[str, Any], int] | None:
    """(weights, step) of ``step`` (default the latest), whatever optimizer state was saved
    with it; ``template`` ({'params'} and, when the model has any, {'batch_stats'}) gives their
    structure, shapes and shardings. None when there is no checkpoint."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)))
    return dict(restored['state']), step

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def weights_template(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Abstract ``{'params', 'batch_stats'}`` of the config's model on the first local device,
  the template that checkpoints and exports are restored into; an empty collection (no
  BatchNorm) is left out, as it is not saved."""
  variables = detector.abstract_variables(detector.build_detector(config))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                      {k: variables[k] for k in ('params', 'batch_stats') if variables.get(k)})


def restore_weights(config: ml_collections.ConfigDict, workdir: str,
                    step: int | None = None) -> tuple[Any, Any, int]:
  """(params, batch_stats, step) of a checkpoint in ``workdir`` (default the latest), without
  the optimizer state; batch_stats is {} for a model without BatchNorm."""
  checkpoints = Checkpoints(workdir)
  restored = checkpoints.restore_weights(weights_template(config), step)
  checkpoints.close()
  if restored is None:
    raise errors.FlagError(f'--workdir {workdir}: no checkpoint in {checkpoints.directory}')
  weights, step = restored
  return weights['params'], weights.get('batch_stats', {}), step


def write_classes(workdir: str, dataset) -> None:
  """``workdir/classes.json``: category id and name of each label, for predict."""
  if jax.process_index() != 0:
    return
  folder = workdir_lib.path(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(folder / 'classes.json',
                         {'category_ids': [int(i) for i in dataset.category_ids],
                          'names': list(dataset.category_names)})


def read_classes(folder: str, num_classes: int) -> list[str]:
  """Label names from ``folder/classes.json`` (see ``write_classes``), else 'class <label>'."""
  path = workdir_lib.path(folder) / 'classes.json'
  if path.exists():
    return json.loads(path.read_text())['names']
  return [f'class {i}' for i in range(num_classes)]


def _handlers() -> ocp.type_handlers.TypeHandlerRegistry:
  """orbax's handlers of the state's leaf types. orbax splits the writing of a replicated array
  among the processes holding its replicas; within one process that split only adds a slice
  program per array and device, compiled at the first save, so a single process writes each
  array whole."""
  scalars = ocp.type_handlers.ScalarHandler()
  return ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=jax.process_count() > 1)),
      (np.ndarray, ocp.type_handlers.NumpyHandler()), (int, scalars), (float, scalars),
      (np.number, scalars))


def _steps_of_process_0(manager: ocp.CheckpointManager) -> list[int]:
  """Process 0's saved steps, newest first, on every process."""
  steps = sorted(manager.all_steps(), reverse=True)
  if jax.process_count() == 1:
    return steps
  count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
  mine = np.array((steps + [-1] * count)[:count], np.int32)
  return [int(s) for s in multihost_utils.broadcast_one_to_all(mine)]


def _processes_that_failed(ok: bool) -> list[int]:
  """The processes whose ``ok`` is False (every process calls this together)."""
  if jax.process_count() == 1:
    return [] if ok else [0]
  oks = multihost_utils.process_allgather(np.array(ok))
  return [int(i) for i in np.flatnonzero(~oks)]


def _single_process_reader(directory: str) -> ocp.CheckpointManager:
  """A manager to read with, whose barriers involve this process alone."""
  me = jax.process_index()
  return ocp.CheckpointManager(directory, item_names=('state', 'data'), options=(
      ocp.CheckpointManagerOptions(create=False, multiprocessing_options=(
          ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                             barrier_sync_key_prefix=f'restore_{me}')))))
