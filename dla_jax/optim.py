"""The optimizer of the paper's recipe (ATSS's): SGD with momentum, linear warm-up, step decay,
weight decay on every trained parameter, and no update at all for frozen backbone stages.

``optim.name='adamw'`` swaps SGD for AdamW (decoupled weight decay) under the same schedule: the
tiny from-scratch configs converge in far fewer steps with it.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax



def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """lr(step): base_lr * global_batch / base_batch, linear warm-up from warmup_ratio over
  warmup_steps (MMDetection's 'linear' warm-up), times decay_factor at each of decay_epochs."""
  o = config.optim
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be at least 1, got {steps_per_epoch}')
  peak = o.base_lr * config.train.global_batch / o.base_batch
  boundaries = [int(e * steps_per_epoch) for e in o.decay_epochs]

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.minimum(step / max(o.warmup_steps, 1), 1.0)
    warmup = 1.0 - (1.0 - o.warmup_ratio) * (1.0 - progress)
    decays = sum((step >= b).astype(jnp.float32) for b in boundaries)
    return peak * warmup * o.decay_factor ** decays

  return schedule


def make_optimizer(config: ml_collections.ConfigDict, trainable: Any,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """On trainable params: 'sgd', SGD with momentum and L2 weight decay added to the gradient
  (torch's SGD ``weight_decay``), or 'adamw'. Frozen params get an update of exactly zero.

  Args:
    config: reads ``optim`` and ``train.global_batch``.
    trainable: pytree of bools over the params, False for frozen ones
      (``models.detector.Detector.trainable``).
    steps_per_epoch: for the schedule's epochs.
  """
  o = config.optim
  labels = jax.tree.map(lambda t: 'train' if t else 'frozen', trainable)
  lr = learning_rate(config, steps_per_epoch)
  if o.name == 'sgd':
    train = optax.chain(optax.add_decayed_weights(o.weight_decay),
                        optax.sgd(lr, momentum=o.momentum))
  else:
    train = optax.adamw(lr, weight_decay=o.weight_decay)
  return optax.partition({'train': train, 'frozen': optax.set_to_zero()}, labels)
