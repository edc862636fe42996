"""Training and evaluation loops: ``train_and_evaluate(config, workdir)`` is what the command
line and notebooks call.

The loop only synchronises with the devices at log steps (every ``train.log_every`` steps):
metrics are summed on the device in between, and a non-finite loss is recorded in the state by
the step itself, then reported here, naming the step where it first happened.
"""

import dataclasses
import json
import signal
import sys
import threading
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from dla_jax import assign
from dla_jax import checkpoint as checkpoint_lib
from dla_jax import errors
from dla_jax import evaluation
from dla_jax import inference
from dla_jax import metric_writer
from dla_jax import optim
from dla_jax import step as step_lib
from dla_jax import workdir as workdir_lib
from dla_jax.data import pipeline
from dla_jax.data import prefetch
from dla_jax.models import detector
from dla_jax.models import pretrained

# Batch fields the train and eval steps read; the others stay on the host.
TRAIN_FIELDS = ('images', 'image_hw', 'boxes', 'labels', 'valid')
EVAL_FIELDS = ('images', 'image_hw')
# What pairs each detection with its image: sharded like the images, gathered like the
# detections, so row i of both is the same example whatever the order of devices and processes.
EVAL_META_FIELDS = ('image_id', 'scale', 'real')


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError naming the first field whose value cannot work."""
  if config.assigner.name not in assign.ASSIGNERS:
    raise errors.ConfigError(f'assigner.name: {config.assigner.name!r} is not one of '
                             f'{assign.ASSIGNERS}')
  if config.assigner.alpha_schedule not in ('epoch', 'continuous', 'fixed'):
    raise errors.ConfigError(f'assigner.alpha_schedule: {config.assigner.alpha_schedule!r} is not '
                             "one of ('epoch', 'continuous', 'fixed')")
  if config.assigner.topk < 1:
    raise errors.ConfigError(f'assigner.topk: must be at least 1, got {config.assigner.topk}')
  if config.inference.ranking not in inference.RANKINGS:
    raise errors.ConfigError(f'inference.ranking: {config.inference.ranking!r} is not one of '
                             f'{inference.RANKINGS}')
  if config.optim.epochs < 1:
    raise errors.ConfigError(f'optim.epochs: must be at least 1, got {config.optim.epochs}')
  for field in ('global_batch', 'eval_batch'):
    if config.train[field] < 1 or config.train[field] % num_devices:
      raise errors.ConfigError(f'train.{field}: {config.train[field]} is not a positive '
                               f'multiple of the {num_devices} devices')
  if config.evaluation.backend not in evaluation.BACKENDS:
    raise errors.ConfigError(f'evaluation.backend: {config.evaluation.backend!r} is not one of '
                             f'{evaluation.BACKENDS}')
  if any(s % 32 for s in config.data.image_size):
    raise errors.ConfigError(f'data.image_size: {tuple(config.data.image_size)} must be '
                             'multiples of 32')


def _to_device(batch: dict[str, np.ndarray], fields, sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in fields}


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


def _compile(jitted, state, batch, verbose: bool):
  """``jitted`` compiled ahead of time for the shapes of (state, batch); says how long it took.
  A compiled step refuses other shapes, so a recompile cannot go unnoticed."""
  start = time.time()
  compiled = jitted.lower(state, batch).compile()
  if verbose:
    h, w = batch['images'].shape[1:3]
    print(f'compiled the train step for {h}x{w} inputs in {time.time() - start:.1f} s',
          flush=True)
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


@dataclasses.dataclass(frozen=True)
class EvalSteps:
  """Evaluation's jitted functions over the devices, built once so that a run with several
  evaluations compiles each of them once per input shape."""
  mesh: jax.sharding.Mesh
  detect: Callable  # (params, batch_stats, batch) -> replicated detections
  gather: Callable  # batch fields sharded like the images -> replicated

  @classmethod
  def build(cls, config: ml_collections.ConfigDict) -> 'EvalSteps':
    mesh = step_lib.make_mesh()
    model = detector.build_detector(config)
    return cls(mesh, step_lib.jit_eval_step(mesh, model=model, config=config),
               jax.jit(lambda meta: meta, out_shardings=step_lib.replicated(mesh)))


def train(config: ml_collections.ConfigDict, workdir: str,
          eval_steps: EvalSteps | None = None) -> step_lib.TrainState:
  """Trains for ``optim.epochs`` epochs, resuming from the latest checkpoint in ``workdir``,
  evaluating on the val split every ``train.eval_every_epochs`` epochs (0: never) with
  ``eval_steps`` (built here when None)."""
  mesh = step_lib.make_mesh()
  check_config(config, mesh.devices.size)
  pretrained.check_backbone_init(config.model)
  workdir_lib.check_writable(workdir)
  train_iter = pipeline.make_train_iterator(config)
  steps_per_epoch = train_iter.batches_per_epoch
  total_steps = config.optim.epochs * steps_per_epoch
  model = detector.build_detector(config)
  variables = detector.init_variables(model, config, jax.random.key(config.train.seed))
  tx = optim.make_optimizer(config, variables['params'], steps_per_epoch)
  state = jax.device_put(step_lib.create_train_state(variables, tx), step_lib.replicated(mesh))
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.train.keep_checkpoints)
  restored = checkpoints.restore(state)
  if restored:
    state, data_state, restored_step = restored
    train_iter.set_state(data_state)
    if jax.process_index() == 0:
      print(f'resumed from step {restored_step} of {checkpoints.directory}', flush=True)
  train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, config=config,
                                       steps_per_epoch=steps_per_epoch)
  batches = prefetch.prefetch_to_device(train_iter, step_lib.batch_sharding(mesh),
                                        fields=TRAIN_FIELDS)
  lead = jax.process_index() == 0  # the process that prints and writes metrics
  writer = metric_writer.MetricWriter(workdir, enabled=lead)
  step = start_step = int(state.step)
  logging.info('training %s for %d steps (%d per epoch) from step %d on %d devices',
               config.model.backbone, total_steps, steps_per_epoch, step, mesh.devices.size)
  sums, interval_steps, interval_start = None, 0, time.time()
  start_time = time.time()
  compiled = {}  # padded (H, W) -> the train step compiled for it: one per orientation
  tty = lead and sys.stdout.isatty()
  with _Preemption() as preemption:
    try:
      while step < total_steps:
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
        if step % config.train.log_every == 0 or step == total_steps:
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
                _eta(step, total_steps, start_step, start_time)), flush=True)
          sums, interval_steps, interval_start = None, 0, now
        if step % config.train.checkpoint_every == 0 or step == total_steps:
          checkpoints.save(step, state, batches.get_state())
        if preemption.reached(step):
          if step % config.train.checkpoint_every and step != total_steps:
            checkpoints.save(step, state, batches.get_state())
          checkpoints.wait()
          print(f'SIGTERM: saved a checkpoint at step {step} in {checkpoints.directory}; '
                'the next run resumes from it', flush=True)
          raise SystemExit(0)
        every = config.train.eval_every_epochs * steps_per_epoch
        if every and step % every == 0 and step < total_steps:
          eval_steps = eval_steps or EvalSteps.build(config)
          evaluate(config, workdir, state.params, state.batch_stats, step,
                   eval_steps=eval_steps)
    finally:
      checkpoints.wait()
      checkpoints.close()
      train_iter.close()
      writer.close()
  return state


def evaluate(config: ml_collections.ConfigDict, workdir: str, params: Any = None,
             batch_stats: Any = None, step: int | None = None, split: str = 'val', *,
             eval_steps: EvalSteps | None = None) -> dict[str, float]:
  """COCO metrics of the model on ``split``; weights from ``params`` or the checkpoint of
  ``step`` (default the latest) in ``workdir``. Writes the detections as a COCO results json
  and the metrics to ``workdir``. Pass the run's ``eval_steps`` to reuse their compilations."""
  eval_steps = eval_steps or EvalSteps.build(config)
  mesh = eval_steps.mesh
  check_config(config, mesh.devices.size)
  workdir_lib.check_writable(workdir)
  if params is None:
    params, batch_stats, step = restore_weights(config, workdir, step)
  eval_iter, dataset = pipeline.make_eval_iterator(config, split,
                                                   global_batch=config.train.eval_batch)
  write_classes(workdir, dataset)
  eval_step, gather = eval_steps.detect, eval_steps.gather
  sharding = step_lib.batch_sharding(mesh)
  params, batch_stats = jax.device_put((params, batch_stats), step_lib.replicated(mesh))
  results = []  # [n, 7] arrays, one per batch
  start = time.time()
  for batch in eval_iter:
    # Image ids fit int32 (checked when the dataset is read); JAX computes in 32 bits.
    batch['image_id'] = batch['image_id'].astype(np.int32)
    on_device = _to_device(batch, EVAL_FIELDS + EVAL_META_FIELDS, sharding)
    detections, meta = jax.device_get((
        eval_step(params, batch_stats, {k: on_device[k] for k in EVAL_FIELDS}),
        gather({k: on_device[k] for k in EVAL_META_FIELDS})))
    results.append(evaluation.to_coco_results(*detections, **meta,
                                              category_ids=dataset.category_ids))
  seconds = time.time() - start
  metrics = {}
  if jax.process_index() == 0:
    path = workdir_lib.path(workdir) / f'detections_{split}_step{step}.json'
    metrics = evaluation.coco_metrics(dataset.coco, np.concatenate(results), path,
                                      config.evaluation.backend)
    print(f'{split} at step {step}: {evaluation.format_metrics(metrics)} '
          f'({len(dataset.records)} images, {seconds:.1f} s)', flush=True)
    writer = metric_writer.MetricWriter(workdir)
    writer.write(step or 0, metrics, split=split)
    writer.close()
  return metrics


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
  checkpoints = checkpoint_lib.Checkpoints(workdir)
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


FINAL_METRICS = 'final_metrics.json'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming if ``workdir`` has checkpoints), then evaluates on the val split.

  The val metrics of the trained model also go to ``workdir/final_metrics.json`` (``step``
  and the COCO metrics), written last and atomically: its presence marks a finished run.
  """
  eval_steps = EvalSteps.build(config)
  state = train(config, workdir, eval_steps)
  step = int(state.step)
  metrics = evaluate(config, workdir, state.params, state.batch_stats, step,
                     eval_steps=eval_steps)
  if jax.process_index() == 0:
    workdir_lib.write_json(workdir_lib.path(workdir) / FINAL_METRICS,
                           {'step': step, 'split': 'val', **metrics}, indent=1)
  return metrics
