"""``shapes_tiny`` at the budget of the reproduction sweeps (docs/reproduction.md#setup).

Half the training images and about half the epochs of ``shapes_tiny`` (12,000 images seen
instead of 44,000), so that the DLA-vs-ATSS comparison and the ablations, several seeds each,
fit a 2-core CPU (their cost is in that section). The alpha schedule keeps its shape: with
T = 6 epochs alpha goes 1.0, 0.966, 0.944, 0.929, 0.919, 0.913 (eq. 2). Evaluates every 2
epochs for the val AP curves.
"""

from dla_jax.configs import shapes_tiny


def get_config():
  config = shapes_tiny.get_config()
  config.data.shapes_train_size = 2000
  config.optim.epochs = 6
  config.optim.decay_epochs = (5, 5.75)
  config.optim.warmup_steps = 150
  config.train.eval_every_epochs = 2
  config.train.log_every = 125
  return config
