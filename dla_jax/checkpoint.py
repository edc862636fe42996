"""Checkpoints of a run in ``workdir/checkpoints``: the train state and the input position.

orbax's CheckpointManager writes each step into a temporary folder and renames it when complete
(atomic), asynchronously so that training goes on while the files are written, and keeps the
last ``keep``. The input iterator's position is saved beside the state as json, so a resumed run
sees exactly the batches it would have seen.
"""

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Save and restore of (train state, input iterator state) by step."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None) -> None:
    """Starts writing ``state`` (and the iterator position) as ``step``; returns at once."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})),
        force=True)

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict, int] | None:
    """(state, iterator state, step) of ``step``, laid out like ``template`` (arrays with
    shardings); None when there is no checkpoint.

    Without ``step``, the latest readable checkpoint: one that cannot be read (truncated or
    corrupt files) is reported and the one before it is tried, so a damaged last save does not
    put a preempted job into a crash loop.

    Raises:
      ValueError: ``step`` was asked for and cannot be read, or no checkpoint can be read.
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    for s in steps:
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        message = f'checkpoint {s} in {self.directory} cannot be read: {type(e).__name__}: {e}'
        if step is not None:
          raise ValueError(message) from e
        print(f'{message}; trying the one before it', flush=True)
        continue
      logging.info('restored step %d from %s', s, self.directory)
      return restored['state'], dict(restored['data'] or {}), s
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
