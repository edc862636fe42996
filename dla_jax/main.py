"""Command line: train, evaluate, train and evaluate, predict, or export.

  python -m dla_jax.main --config configs/shapes_tiny.py --workdir /tmp/dla_shapes
  python -m dla_jax.main --config shapes_tiny --workdir /tmp/dla_shapes  # from any folder
  python -m dla_jax.main --config configs/dla_r50_fpn_1x_coco.py --workdir ~/runs/r50 \
      --config.data.source=coco_json --config.optim.base_lr=0.02
  python -m dla_jax.main --mode export --config configs/shapes_tiny.py \
      --workdir /tmp/dla_shapes --out /tmp/dla_shapes_export
  python -m dla_jax.main --mode predict --weights /tmp/dla_shapes_export \
      --images 'photos/*.png' --out /tmp/drawn
  python -m dla_jax.main --mode export --format stablehlo --config configs/shapes_tiny.py \
      --workdir /tmp/dla_shapes --out /tmp/dla_shapes_stablehlo  # then dla_jax.serving
"""

import glob

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from dla_jax import checkpoint
from dla_jax import cli
from dla_jax import config_check
from dla_jax import cpu
from dla_jax import evaluation
from dla_jax import export_params
from dla_jax import export_stablehlo
from dla_jax import predict
from dla_jax import runtime
from dla_jax import serving
from dla_jax import train

MODES = ('train', 'evaluate', 'train_and_evaluate', 'predict', 'export')

_CONFIG = cli.define_config_flag(
    help_string='Experiment config: a file, or the name of a packaged config (shapes_tiny, '
    'dla_r50_fpn_1x_coco, ...). Optional with --weights, whose config is used.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Checkpoints, metrics and detections go here. Optional for predict with '
    '--weights.')
_MODE = flags.DEFINE_enum('mode', 'train_and_evaluate', MODES, 'What to run.')
_STEP = flags.DEFINE_integer('step', None, 'evaluate/predict/export: checkpoint step (default '
                             'latest).')
_WEIGHTS = flags.DEFINE_string('weights', None, 'evaluate/predict: an export folder (from '
                               '--mode export) instead of the checkpoints in --workdir; '
                               'predict also takes a stablehlo export.')
_FORMAT = flags.DEFINE_enum('format', 'params', ['params', 'stablehlo'],
                            'export: params (the weights and config, for this package) or '
                            'stablehlo (serialized programs for dla_jax.serving, which needs '
                            'only jax, numpy and Pillow; dla_jax/export_stablehlo.py).')
_IMAGES = flags.DEFINE_string('images', None, 'predict: glob of image files.')
_OUT = flags.DEFINE_string('out', None, 'predict: folder for the drawn PNGs; export: the new '
                           'export folder.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join a multi-process run with jax.distributed.initialize: from '
    '--coordinator_address/--num_processes/--process_id when given, else from the environment '
    '(Cloud TPU, SLURM).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Linux/glibc, CPU backend only: keep the memory XLA:CPU frees '
    'for its next call instead of faulting in fresh pages at every step (faster steps; the '
    'process keeps its peak heap; dla_jax/cpu/host_memory.py). --nokeep_freed_memory turns it off.')


def _require(**values):
  for name, value in values.items():
    if not value:
      raise app.UsageError(f'--mode {_MODE.value} needs --{name}')


def _image_paths() -> list[str]:
  paths = sorted(glob.glob(_IMAGES.value))
  if not paths:
    raise app.UsageError(f'--images {_IMAGES.value!r} matches no file')
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  mode, workdir, config = _MODE.value, _WORKDIR.value, _CONFIG.value
  if _WEIGHTS.value and mode not in ('evaluate', 'predict'):
    raise app.UsageError(f'--weights is for --mode evaluate or predict, not {mode}')
  if _WEIGHTS.value and _STEP.value is not None:
    raise app.UsageError('--step picks a checkpoint in --workdir; an export has one step')
  if _KEEP_FREED_MEMORY.value:
    cpu.keep_freed_memory()  # before JAX starts its backend
  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _WEIGHTS.value and serving.is_stablehlo_export(_WEIGHTS.value):
    if mode != 'predict':
      raise app.UsageError(f'--weights {_WEIGHTS.value} is a stablehlo export, which runs '
                           '--mode predict only; evaluate takes a params export')
    _require(images=_IMAGES.value, out=_OUT.value)
    for path in predict.predict_stablehlo(serving.load(_WEIGHTS.value), _image_paths(),
                                          _OUT.value):
      print(path)
    return
  params_export = export_params.load(_WEIGHTS.value) if _WEIGHTS.value else None
  config_file = (cli.config_path(config_flags.get_config_filename(flags.FLAGS['config']))
                 if config is not None else None)
  if params_export and config is None:
    config, config_file = params_export.config, f'{_WEIGHTS.value} (export)'
  _require(config=config)
  on_devices = mode in ('train', 'train_and_evaluate', 'evaluate')  # batches split over them
  if not on_devices:  # train and evaluate check the config themselves
    config_check.check(config, 1, training=False)
  if not (mode == 'predict' and params_export):  # an export alone is enough to predict
    _require(workdir=workdir)
  runtime.enable_compilation_cache(config, workdir)
  if jax.process_index() == 0:
    print(runtime.startup_line(config, config_file), flush=True)
  if on_devices:
    runtime.require_accelerator(config)
  if mode == 'train':
    train.train(config, workdir)
  elif mode == 'train_and_evaluate':
    train.train_and_evaluate(config, workdir)
  elif mode == 'evaluate':
    if params_export:
      evaluation.evaluate(config, workdir, params_export.params, params_export.batch_stats,
                          params_export.step)
    else:
      evaluation.evaluate(config, workdir, step=_STEP.value)
  elif mode == 'export' and _FORMAT.value == 'stablehlo':
    _require(out=_OUT.value)
    params, batch_stats, step = checkpoint.restore_weights(config, workdir, _STEP.value)
    manifest = export_stablehlo.export(config, params, batch_stats,
                                       checkpoint.read_classes(workdir, config.data.num_classes),
                                       _OUT.value, step)
    print(f'exported step {step} of {workdir} to {_OUT.value} as StableHLO for '
          f'{", ".join(manifest["platforms"])} in {manifest["export_seconds"]:.1f} s')
  elif mode == 'export':
    _require(out=_OUT.value)
    step = export_params.export(config, workdir, _OUT.value, _STEP.value)
    print(f'exported step {step} of {workdir} to {_OUT.value}')
  else:
    _require(images=_IMAGES.value, out=_OUT.value)
    paths = _image_paths()
    if params_export:
      params, batch_stats, names = (params_export.params, params_export.batch_stats,
                                    params_export.class_names)
    else:
      params, batch_stats, _ = checkpoint.restore_weights(config, workdir, _STEP.value)
      names = checkpoint.read_classes(workdir, config.data.num_classes)
    for path in predict.predict(config, params, batch_stats, names, paths, _OUT.value):
      print(path)


if __name__ == '__main__':
  cli.run(main)
