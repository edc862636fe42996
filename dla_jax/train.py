"""The training loop: ``train_and_evaluate(config, workdir)`` is what the command line and
notebooks call; ``train`` runs the loop alone. Each checks the config once
(``config_check.check``) before anything is built, then runs the unchecked ``_train_loop``.

The loop only synchronises with the devices at log steps (every ``train.log_every`` steps):
metrics are summed on the device in between, and a non-finite loss is recorded in the state by
the step itself, then reported here, naming the step where it first happened.
"""

import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from dla_jax import checkpoint as checkpoint_lib
from dla_jax import config_check
from dla_jax import evaluation
from dla_jax import metric_writer
from dla_jax import optim
from dla_jax import step as step_lib
from dla_jax import workdir as workdir_lib
from dla_jax.data import pipeline
from dla_jax.data import prefetch
from dla_jax.models import detector


def _eta(step: int, total: int, start_step: int, start_time: float) -> str:
  """'h:mm:ss' left at the mean pace since ``start_step``."""
  per_step = (time.time() - start_time) / max(step - start_step, 1)
  eta = int(per_step * (total - step))
  return f'{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}'


def _log_line(step: int, total_steps: int, steps_per_epoch: int, means: dict[str, float],
              eta: str) -> str:
  quality = 'metric' if 'loss_metric' in means else 'centerness'
  return (f'step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f}) | '
          f'loss {means["loss"]:.4f} = cls {means["loss_cls"]:.4f} '
          f'+ reg {means["loss_reg"]:.4f} + {quality} {means[f"loss_{quality}"]:.4f} | '
          f'alpha {means["alpha"]:.4f} | lr {means["lr"]:.5f} | pos {means["num_pos"]:.1f} | '
          f'{means["images_per_s"]:.1f} img/s | ETA {eta}')


# How long the processes of a run wait for each other to compile a train step.
_COMPILE_WAIT_S = 3600


def _compile(jitted, state, batch, verbose: bool):
  """``jitted`` compiled ahead of time for the shapes of (state, batch); says how long it took.
  A compiled step refuses other shapes, so a recompile cannot go unnoticed.

  The processes of a run wait for each other here: one may load the step from its compilation
  cache (on the CPU only process 0 does) while another compiles it for a minute or more, longer
  than the step's collectives wait for a peer.
  """
  start = time.time()
  compiled = jitted.lower(state, batch).compile()
  h, w = batch['images'].shape[1:3]
  if verbose:
    print(f'compiled the train step for {h}x{w} inputs in {time.time() - start:.1f} s',
          flush=True)
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f'compiled_train_step_{h}x{w}', timeout=_COMPILE_WAIT_S)
  return compiled


class _Preemption:
  """Tells the loop when to checkpoint and stop because SIGTERM (what TPU and cloud preemption
  send) arrived.

  One process: a Python handler turns SIGTERM into a flag (installed only in the main thread,
  where Python delivers signals; the previous handler is restored on exit). Several processes:
  JAX's preemption service, started by ``jax.distributed.initialize``, catches SIGTERM on any
  host and agrees with the others on a step at which all of them save, since a checkpoint is
  written by all processes together.
  """

  def __init__(self):
    self._requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self._requested = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after ``step``; every process calls it at every step."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str) -> step_lib.TrainState:
  """Trains for ``optim.epochs`` epochs (or up to ``train.stop_at_step``), resuming from the
  latest checkpoint in ``workdir``, evaluating on the val split every
  ``train.eval_every_epochs`` epochs (0: never)."""
  config_check.check(config, jax.device_count(), jax.process_count())
  return _train_loop(config, workdir)[0]


def _train_loop(config: ml_collections.ConfigDict, workdir: str,
                eval_steps: evaluation.EvalSteps | None = None
                ) -> tuple[step_lib.TrainState, int]:
  """``train`` for a checked ``config``, evaluating with ``eval_steps`` (built here when
  needed); also returns the schedule's total steps."""
  mesh = step_lib.make_mesh()
  workdir_lib.check_writable(workdir)
  train_iter = pipeline.make_train_iterator(config)
  steps_per_epoch = train_iter.batches_per_epoch
  total_steps = config.optim.epochs * steps_per_epoch
  stop = min(config.train.stop_at_step or total_steps, total_steps)
  model = detector.build_detector(config)
  abstract = detector.abstract_variables(model)
  tx = optim.make_optimizer(config, model.trainable(abstract['params']), steps_per_epoch)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.train.keep_checkpoints)
  # A resumed run reads its state into the shapes of a fresh one: the initial weights are
  # drawn (and their program compiled) only for a run that starts.
  replicated = step_lib.replicated(mesh)
  template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          jax.eval_shape(lambda v: step_lib.create_train_state(v, tx), abstract))
  restored = checkpoints.restore(template)
  if restored:
    state, data_state, restored_step = restored
    train_iter.set_state(data_state)
    if jax.process_index() == 0:
      print(f'resumed from step {restored_step} of {checkpoints.directory}', flush=True)
  else:
    variables = detector.init_variables(config, jax.random.key(config.train.seed))
    state = jax.device_put(step_lib.create_train_state(variables, tx), replicated)
  train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, config=config,
                                       steps_per_epoch=steps_per_epoch)
  batches = prefetch.prefetch_to_device(train_iter, step_lib.batch_sharding(mesh),
                                        fields=step_lib.TRAIN_FIELDS)
  lead = jax.process_index() == 0  # the process that prints and writes metrics
  writer = metric_writer.MetricWriter(workdir, enabled=lead)
  step = start_step = int(state.step)
  if lead:
    devices = mesh.devices.size
    print(f'training {config.model.backbone} for {total_steps} steps ({steps_per_epoch} per '
          f'epoch) from step {step} on {devices} device{"s" if devices > 1 else ""}'
          f'{f", stopping after step {stop}" if stop < total_steps else ""}', flush=True)
  sums, interval_steps, interval_start = None, 0, time.time()
  start_time = time.time()
  compiled = {}  # padded (H, W) -> the train step compiled for it: one per orientation
  tty = lead and sys.stdout.isatty()
  with _Preemption() as preemption:
    try:
      while step < stop:
        batch = next(batches)
        hw = tuple(batch['images'].shape[1:3])
        if hw not in compiled:
          compiled[hw] = _compile(train_step, state, batch, lead)
        state, metrics = compiled[hw](state, batch)
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        step += 1
        interval_steps += 1
        if tty:
          print(f'\rstep {step}/{total_steps}', end='', flush=True)
        if step % config.train.log_every == 0 or step == stop:
          bad = int(state.nonfinite_step)
          if bad >= 0:
            checkpoints.wait()
            raise FloatingPointError(
                f'the loss was not finite at step {bad}; its update was skipped and training '
                f'stopped at step {step}. Last checkpoint: {checkpoints.latest_step()}')
          means = {k: float(v) / interval_steps for k, v in jax.device_get(sums).items()}
          now = time.time()
          images = interval_steps * config.train.global_batch
          means['images_per_s'] = images / (now - interval_start)
          writer.write(step, means)
          if lead:
            print(('\r' if tty else '') + _log_line(
                step, total_steps, steps_per_epoch, means,
                _eta(step, stop, start_step, start_time)), flush=True)
          sums, interval_steps, interval_start = None, 0, now
        if step % config.train.checkpoint_every == 0 or step == stop:
          checkpoints.save(step, state, batches.get_state())
        if preemption.reached(step):
          if step % config.train.checkpoint_every and step != stop:
            checkpoints.save(step, state, batches.get_state())
          checkpoints.wait()
          print(f'SIGTERM: saved a checkpoint at step {step} in {checkpoints.directory}; '
                'the next run resumes from it', flush=True)
          raise SystemExit(0)
        every = config.train.eval_every_epochs * steps_per_epoch
        if every and step % every == 0 and step < stop:
          eval_steps = eval_steps or evaluation.EvalSteps.build(config)
          evaluation.evaluate_weights(config, workdir, state.params, state.batch_stats, step,
                                      eval_steps)
    finally:
      checkpoints.wait()
      checkpoints.close()
      train_iter.close()
      writer.close()
  if lead and step < total_steps:
    print(f'stopped after step {step} of {total_steps} (train.stop_at_step); a later stop, or 0, '
          'resumes from it', flush=True)
  return state, total_steps


FINAL_METRICS = 'final_metrics.json'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming if ``workdir`` has checkpoints), then evaluates on the val split.

  The val metrics of the trained model also go to ``workdir/final_metrics.json`` (``step``
  and the COCO metrics), written last and atomically: its presence marks a finished run, so a
  run stopped early by ``train.stop_at_step`` does not write it.
  """
  config_check.check(config, jax.device_count(), jax.process_count())
  eval_steps = evaluation.EvalSteps.build(config)
  state, total_steps = _train_loop(config, workdir, eval_steps)
  step = int(state.step)
  metrics = evaluation.evaluate_weights(config, workdir, state.params, state.batch_stats, step,
                                        eval_steps)
  if jax.process_index() == 0 and step == total_steps:
    workdir_lib.write_json(workdir_lib.path(workdir) / FINAL_METRICS,
                           {'step': step, 'split': 'val', **metrics}, indent=1)
  return metrics
