"""Command line: train, evaluate, train and evaluate, or predict.

  python -m dla_jax.main --config configs/shapes_tiny.py --workdir /tmp/dla_shapes
  python -m dla_jax.main --config configs/dla_r50_fpn_1x_coco.py --workdir ~/runs/r50 \
      --config.data.source=coco_json --config.optim.base_lr=0.02
  python -m dla_jax.main --mode predict --config configs/shapes_tiny.py \
      --workdir /tmp/dla_shapes --images 'photos/*.png' --out /tmp/drawn
"""

import glob

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from dla_jax import predict
from dla_jax import train

MODES = ('train', 'evaluate', 'train_and_evaluate', 'predict')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and detections go here.')
_MODE = flags.DEFINE_enum('mode', 'train_and_evaluate', MODES, 'What to run.')
_STEP = flags.DEFINE_integer('step', None, 'evaluate/predict: checkpoint step (default latest).')
_IMAGES = flags.DEFINE_string('images', None, 'predict: glob of image files.')
_OUT = flags.DEFINE_string('out', None, 'predict: folder for the drawn PNGs.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join a multi-process run with jax.distributed.initialize: from '
    '--coordinator_address/--num_processes/--process_id when given, else from the environment '
    '(Cloud TPU, SLURM).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  if _MODE.value == 'train':
    train.train(config, workdir)
  elif _MODE.value == 'evaluate':
    train.evaluate(config, workdir, step=_STEP.value)
  elif _MODE.value == 'train_and_evaluate':
    train.train_and_evaluate(config, workdir)
  else:
    if not _IMAGES.value or not _OUT.value:
      raise app.UsageError('--mode predict needs --images and --out')
    paths = sorted(glob.glob(_IMAGES.value))
    if not paths:
      raise app.UsageError(f'--images {_IMAGES.value!r} matches no file')
    for path in predict.predict(config, workdir, paths, _OUT.value, step=_STEP.value):
      print(path)


if __name__ == '__main__':
  app.run(main)
