"""The train state and the jitted, sharded train and eval steps.

Sharding: one mesh axis, ``data``. The global batch is split over it, the state is replicated,
and ``jax.jit`` compiles one program for all devices (and all hosts, after
``jax.distributed.initialize``). Loss sums over the global batch are global by construction, so
``N_pos`` and ``sum(w)`` normalise by the whole batch, as MMDetection's ``reduce_mean`` does.

Everything that changes during a run (step, hence lr and alpha) is an array in the state, so
each step function compiles once per input shape for the whole run.
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dla_jax import assign
from dla_jax import inference
from dla_jax import losses
from dla_jax import optim
from dla_jax import priors as priors_lib
from dla_jax.models import detector
from dla_jax.models import fpn as fpn_lib

DATA_AXIS = 'data'
# Batch fields the train and eval steps read; the others stay on the host.
TRAIN_FIELDS = ('images', 'image_hw', 'boxes', 'labels', 'valid')
EVAL_FIELDS = ('images', 'image_hw')


@flax.struct.dataclass
class TrainState:
  """Attributes:
    step: [] int32, optimizer steps taken; alpha (eq. 2) and lr are functions of it.
    params: trainable and frozen parameters (frozen ones get zero updates).
    batch_stats: frozen BatchNorm constants.
    opt_state: optax state.
    nonfinite_step: [] int32, the first step whose loss was not finite, -1 if none; that step's
      update is skipped, and the host stops the run at its next log step.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  nonfinite_step: jax.Array


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over ``devices`` (all devices of all processes by default)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(devices, (DATA_AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@functools.lru_cache(maxsize=8)
def priors_for(image_hw: tuple[int, int], anchor_scale: float) -> priors_lib.Priors:
  """Priors of a padded input size (host arrays, computed once per shape)."""
  return priors_lib.make_priors(image_hw, fpn_lib.STRIDES, anchor_scale)


def create_train_state(variables: dict[str, Any],
                       tx: optax.GradientTransformation) -> TrainState:
  """Step 0 from the detector's initial ``variables`` (``detector.init_variables``)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(variables['params']),
                    nonfinite_step=jnp.full((), -1, jnp.int32))


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: detector.Detector,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               steps_per_epoch: int,
               mesh: jax.sharding.Mesh | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a global batch (see ``dla_jax.data`` for the batch's fields), the
  batch split over ``mesh``'s data axis when given (the assigner then runs per device).

  Returns the new state and scalar metrics: the loss and its parts, ``num_pos`` (positives in
  the global batch), ``alpha`` and ``lr``.
  """
  images, image_hw = batch['images'], batch['image_hw']
  priors = priors_for(tuple(images.shape[1:3]), config.model.anchor_scale)
  alpha = assign.alpha_schedule(state.step, steps_per_epoch, config.assigner,
                                config.optim.epochs)

  def loss_fn(params):
    outputs = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                          image_hw)
    return losses.detection_loss(outputs, priors, batch['boxes'], batch['labels'],
                                 batch['valid'], alpha, config, mesh=mesh)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  finite = jnp.isfinite(loss)
  params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                   (optax.apply_updates(state.params, updates), opt_state),
                                   (state.params, state.opt_state))
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                             state.nonfinite_step)
  metrics['lr'] = optim.learning_rate(config, steps_per_epoch)(state.step)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       nonfinite_step=nonfinite_step), metrics


def eval_step(params: Any, batch_stats: Any, batch: dict[str, jax.Array], *,
              model: detector.Detector, config: ml_collections.ConfigDict,
              mesh: jax.sharding.Mesh | None = None) -> inference.Detections:
  """Forward pass and on-device detection for one batch. With ``mesh`` (the batch split over
  its data axis), each device detects on its own images: left to itself, XLA's partitioner
  gathers every image's pre-NMS scores onto every device for the top-k."""
  images = batch['images']
  priors = priors_for(tuple(images.shape[1:3]), config.model.anchor_scale)
  outputs = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                        batch['image_hw'])
  detect = functools.partial(inference.detect, priors=priors, config=config)
  if mesh is not None:
    # check_vma off: NMS's loop starts from constants that the loop makes per-device.
    detect = jax.shard_map(detect, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS)),
                           out_specs=P(DATA_AXIS), check_vma=False)
  return detect(outputs, batch['image_hw'])


def jit_train_step(mesh: jax.sharding.Mesh, **static) -> Callable:
  """``train_step`` jitted over ``mesh``: state replicated and donated, batch sharded."""
  return jax.jit(functools.partial(train_step, mesh=mesh, **static),
                 in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def jit_eval_step(mesh: jax.sharding.Mesh, **static) -> Callable:
  """``eval_step`` jitted over ``mesh``; detections come back replicated (they are small)."""
  return jax.jit(functools.partial(eval_step, mesh=mesh, **static),
                 in_shardings=(replicated(mesh), replicated(mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))
