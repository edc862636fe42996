"""dla-jax beside torchvision's FCOS R50-FPN, on identical inputs in the same process.

  python -m dla_jax.tools.benchmark --config configs/dla_r50_fpn_1x_coco.py \
      --image_size 512,512 --batch 2
  python -m dla_jax.tools.benchmark --image_size 800,1344 --batch 16 --dtype bfloat16  # a GPU

Times, as the median of ``--repeats`` calls after ``--warmup`` calls (each call waited for),
dla-jax's and FCOS's calls taking turns so that a machine whose speed drifts slows both alike.
Each dla / FCOS ratio is the median over the rounds of dla-jax's time over FCOS's in the same
round, with the range over the rounds beside it (``timing``). What is timed:

- train step: dla-jax's jitted step (forward, assignment, loss, backward, optimizer update,
  the config's optimizer) against FCOS's forward with targets, backward and an SGD step;
- inference: forward, decoding and NMS, both with the config's test settings (score threshold,
  NMS IoU, detections per image);
- the assigner alone on the same batch (its share of the train step is printed);
- compile time of the train and inference steps;
- the host's main-thread ms per train step (``--parts host``): transfer, dispatch and metric
  accumulation around the compiled step;
- memory: the device's peak bytes where it reports them (GPU), else XLA's account of the
  compiled train step (arguments, outputs and temporaries);
- the input pipeline: COCO-like JPEGs (``coco_like``) read, resized, flipped and padded to the
  size;
- the stablehlo export (``--parts deploy``): its time and size, and inference through the
  deserialized program against the package's own eval step.

The same uint8 images and boxes go to both. FCOS (``fcos_baseline``) has its resize pinned to
the image size and its classes and test settings set to the config's. ``--fcos_variant`` picks
torchvision's FCOS as built without any weights (trainable BatchNorm, every stage trained) or as
built for ImageNet weights (frozen BatchNorm, stem and stage 1 frozen: the recipe dla-jax's COCO
configs follow); ``both`` times each. With ``--dtype bfloat16`` dla-jax computes in bfloat16 and
FCOS runs under autocast. ``python -m dla_jax.tools.accelerator_suite`` runs this command once
per case worth measuring on an accelerator, within a time limit.
"""

import json
import os
import pathlib
import platform
import statistics
import tempfile
from typing import Callable

# JAX and torch share a GPU here: JAX takes memory as it needs it instead of 75% up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dla_jax import assign as assign_lib
from dla_jax import cli
from dla_jax import config_check
from dla_jax import cpu
from dla_jax import export_stablehlo
from dla_jax import optim
from dla_jax import serving
from dla_jax import step as step_lib
from dla_jax.data import loading
from dla_jax.data import prefetch
from dla_jax.models import detector
from dla_jax.tools import coco_like
from dla_jax.tools import fcos_baseline
from dla_jax.tools import timing

_CONFIG = cli.define_config_flag('config', 'dla_r50_fpn_1x_coco', 'Experiment config to time.')
_IMAGE_SIZE = flags.DEFINE_list('image_size', ['512', '512'], 'Input height,width in pixels '
                                '(multiples of 32); sets data.image_size and data.scale.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Images per step, over all local devices.')
_PER_DEVICE_BATCH = flags.DEFINE_integer('per_device_batch', 0,
                                         'Images per step and local device (instead of --batch).')
_GTS = flags.DEFINE_integer('gts', 20, 'Ground-truth boxes per image.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                           'Compute dtype (default: the config\'s model.dtype on this backend).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement (and the '
                                'steps of the host measurement).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing.')
PARTS = ('train', 'infer', 'assign', 'host', 'input', 'fcos', 'deploy')
_PARTS = flags.DEFINE_list('parts', ['train', 'infer', 'assign', 'input', 'fcos'],
                           f'What to time: {", ".join(PARTS)}.')
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep the memory XLA:CPU frees for its next call '
    '(dla_jax/cpu/host_memory.py), for both contenders, as dla_jax.main does by default; '
    '--nokeep_freed_memory times without it.')
_FCOS_VARIANT = flags.DEFINE_enum('fcos_variant', 'no_weights',
                                  [*fcos_baseline.VARIANTS, 'both'],
                                  'Which torchvision FCOS build to time (see the module doc).')
_JSON = flags.DEFINE_string('json', '', 'Also write the figures to this JSON file.')

TRAIN_STEPS_PER_EPOCH = 1000  # only sets where the lr schedule is; the step's cost is the same


def benchmark_config(config: ml_collections.ConfigDict, image_hw: tuple[int, int], batch: int,
                     gts: int, dtype: str | None) -> ml_collections.ConfigDict:
  """``config`` set to the benchmark's input size, batch, box count and dtype."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.image_size = tuple(image_hw)
  config.data.scale = (max(image_hw), min(image_hw))
  config.data.short_side_range = (min(image_hw), min(image_hw))
  config.data.max_boxes = gts
  config.train.global_batch = config.train.eval_batch = batch
  config.model.dtype = dtype or detector.compute_dtype_name(config)
  return config


def synthetic_batch(batch: int, image_hw: tuple[int, int], gts: int, num_classes: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Smooth random images [B, H, W, 3] uint8 with ``gts`` boxes [B, G, 4] each (8 px to half
  the image, inside it), labels [B, G] and valid [B, G]; image_hw [B, 2] is the full size."""
  rng = np.random.default_rng(seed)
  h, w = image_hw
  coarse = rng.uniform(0, 255, (batch, h // 16 + 1, w // 16 + 1, 3))
  images = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :w]
  images = np.clip(images + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
  wh = rng.uniform(8, min(h, w) / 2, (batch, gts, 2))
  xy = rng.uniform(0, 1, (batch, gts, 2)) * ((w, h) - wh)
  return {'images': images,
          'image_hw': np.tile(np.array([[h, w]], np.int32), (batch, 1)),
          'boxes': np.concatenate([xy, xy + wh], axis=-1).astype(np.float32),
          'labels': rng.integers(0, num_classes, (batch, gts)).astype(np.int32),
          'valid': np.ones((batch, gts), bool)}


def dla_calls(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], parts,
              host_steps: int) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
  """dla-jax's 'train' step and 'infer' (as ``parts`` asks), each a call that waits for its
  results, and their compile seconds, the train step's XLA memory bytes and (with 'host' in
  ``parts``) the host's ms per step around it, over ``host_steps`` steps. Inference runs on the
  train state's current weights, which the train step donates and replaces."""
  mesh = step_lib.make_mesh(jax.local_devices())
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  tx = optim.make_optimizer(config, model.trainable(variables['params']), TRAIN_STEPS_PER_EPOCH)
  on_device = {k: jax.device_put(v, step_lib.batch_sharding(mesh)) for k, v in batch.items()}
  state = jax.device_put(step_lib.create_train_state(variables, tx), step_lib.replicated(mesh))
  calls, info = {}, {}
  if 'train' in parts:
    train_batch = {k: on_device[k] for k in step_lib.TRAIN_FIELDS}
    jitted = step_lib.jit_train_step(mesh, model=model, tx=tx, config=config,
                                     steps_per_epoch=TRAIN_STEPS_PER_EPOCH)
    step, info['train_compile_s'] = timing.timed(
        lambda: jitted.lower(state, train_batch).compile())
    memory = step.memory_analysis()
    if memory is not None:
      info['train_xla_bytes'] = (memory.argument_size_in_bytes + memory.output_size_in_bytes +
                                 memory.temp_size_in_bytes)
    if 'host' in parts:
      state, info['host_ms'] = host_ms_per_step(step, state, batch, mesh, host_steps)

    def train_call():
      nonlocal state
      state, metrics = step(state, train_batch)
      jax.block_until_ready((state, metrics))

    calls['train'] = train_call
  if 'infer' in parts:
    eval_batch = {k: on_device[k] for k in step_lib.EVAL_FIELDS}
    jitted = step_lib.jit_eval_step(mesh, model=model, config=config)
    infer, info['infer_compile_s'] = timing.timed(
        lambda: jitted.lower(state.params, state.batch_stats, eval_batch).compile())
    calls['infer'] = lambda: jax.block_until_ready(
        infer(state.params, state.batch_stats, eval_batch))
  return calls, info


def host_ms_per_step(step, state: step_lib.TrainState, batch: dict[str, np.ndarray],
                     mesh: jax.sharding.Mesh,
                     num_steps: int) -> tuple[step_lib.TrainState, dict[str, float]]:
  """The training loop's main-thread ms per step around the compiled train ``step``
  (``timing.host_loop_ms``), from a host batch already loaded: transfer, dispatch and metric
  accumulation. Returns the state after those steps (``state`` is donated to them)."""

  def run_step(on_device):
    nonlocal state
    state, metrics = step(state, on_device)
    return metrics

  sharding = step_lib.batch_sharding(mesh)
  ms = timing.host_loop_ms(
      lambda: batch,
      lambda host_batch: prefetch.put_global_batch(host_batch, sharding, step_lib.TRAIN_FIELDS),
      run_step, num_steps)
  return state, ms


def time_deploy(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], repeats: int,
                warmup: int) -> dict[str, float]:
  """The stablehlo export (``dla_jax/export_stablehlo.py``) of a random initialisation: its
  seconds and bytes, and seconds per call of its deserialized program against the package's own jitted
  eval step on the same padded batch, taking turns. Both use XLA's own convolutions, so this
  compares the program, not the CPU's convolution choices."""
  config = export_stablehlo.portable_config(config)
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  batch_stats = variables.get('batch_stats', {})
  inputs = {k: batch[k] for k in step_lib.EVAL_FIELDS}
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp) / 'export'
    _, export_seconds = timing.timed(lambda: export_stablehlo.export(
        config, variables['params'], batch_stats,
        [str(i) for i in range(config.data.num_classes)], str(folder), 0))
    figures = {'deploy_export_s': export_seconds,
               'deploy_bytes': sum(f.stat().st_size for f in folder.iterdir())}
    served = serving.load(str(folder))
    program = served.program(tuple(batch['images'].shape[1:3]))
    mesh = step_lib.make_mesh(jax.local_devices()[:1])
    eval_step = step_lib.jit_eval_step(mesh, model=model, config=config)
    times = timing.interleaved_times({
        'served': lambda: jax.block_until_ready(program.call(served.weights, inputs['images'],
                                                            inputs['image_hw'])),
        'package': lambda: jax.block_until_ready(
            eval_step(variables['params'], batch_stats, inputs)),
    }, repeats, warmup)
  figures.update({f'deploy_{k}_s': statistics.median(v) for k, v in times.items()})
  return figures


def time_assigner(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], repeats,
                  warmup) -> float:
  """Seconds per call of the batched assigner alone, with random class probabilities and
  predicted boxes near the priors (what the train step feeds it)."""
  priors = step_lib.priors_for(tuple(config.data.image_size), config.model.anchor_scale)
  rng = np.random.default_rng(1)
  b, n = len(batch['images']), len(priors.centers)
  probs = rng.uniform(0, 1, (b, n, config.data.num_classes)).astype(np.float32)
  predicted = (priors.anchors + rng.normal(0, 4, (b, n, 4))).astype(np.float32)
  fn = jax.jit(lambda *args: assign_lib.assign_batch(
      *args, level_sizes=priors.level_sizes, topk=config.assigner.topk,
      gamma=config.assigner.gamma, num_classes=config.data.num_classes,
      name=config.assigner.name))
  args = [jnp.asarray(x) for x in (priors.anchors, priors.centers, batch['boxes'],
                                   batch['labels'], batch['valid'], probs, predicted)]
  args.append(jnp.float32(0.95))
  return timing.median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats, warmup)


def input_images_per_second(config: ml_collections.ConfigDict, num_batches: int) -> float:
  """images/s of the training input pipeline on COCO-like JPEGs at the config's size, batch,
  workers and threads."""
  with tempfile.TemporaryDirectory() as tmp:
    return timing.images_per_second(
        coco_like.coco_like_config(config, pathlib.Path(tmp), num_batches), num_batches)


def time_side_by_side(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], parts,
                      fcos_variants: list[str], repeats: int,
                      warmup: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """dla-jax's and each FCOS build's train step and inference (those of ``parts``), timed
  interleaved (``timing.interleaved_times``), with the train step's peak memory where the device
  reports it (FCOS's counts the other builds' resident weights too). Returns dla-jax's figures
  (with compile seconds and memory) and FCOS's by build, with dla-jax's time over FCOS's in
  each round (``{part}_ratios``)."""
  dla_part_calls, dla = dla_calls(config, batch, parts, _REPEATS.value)
  fcos = {variant: {} for variant in fcos_variants}
  contenders = {part: {'dla': call} for part, call in dla_part_calls.items()}
  for variant in fcos_variants:
    for part, call in fcos_baseline.fcos_calls(variant, config, batch).items():
      if part in contenders:
        contenders[part][variant] = call
  for part, calls in contenders.items():
    times = timing.interleaved_times(calls, repeats, warmup)
    for name, seconds in times.items():
      (dla if name == 'dla' else fcos[name])[f'{part}_s'] = statistics.median(seconds)
      if name != 'dla':  # the round's dla-jax call over the same round's FCOS call
        fcos[name][f'{part}_ratios'] = [d / f for d, f in zip(times['dla'], seconds)]
  peak = timing.peak_device_bytes()
  if peak is not None:
    dla['peak_bytes'] = peak
  if 'train' in contenders and peak is not None:
    dla['train_peak_bytes'] = peak
    for variant in fcos_variants:  # one more step from a reset peak, build by build
      fcos[variant]['train_peak_bytes'] = fcos_baseline.cuda_peak_bytes(
          contenders['train'][variant])
  return dla, fcos


def machine() -> str:
  device = jax.local_devices()[0]
  return (f'{device.platform} / {device.device_kind} x {jax.local_device_count()}, '
          f'{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}')


def _ms(seconds: float | None) -> str:
  return '' if seconds is None else f'{1e3 * seconds:.1f}'


def _ratio(a: float | None, b: float | None) -> str:
  return '' if a is None or b is None else f'{a / b:.2f}'


def _paired_ratio(ratios: list[float] | None) -> str:
  """The median of the per-round ratios, with their range."""
  if not ratios:
    return ''
  return f'{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})'


def table(config: ml_collections.ConfigDict, dla: dict[str, float],
          fcos: dict[str, dict[str, float]], input_rate: float | None) -> str:
  """The markdown report: one row per measurement, FCOS columns and dla / FCOS ratios."""
  batch = config.train.global_batch
  names = list(fcos)
  header = ['what', 'dla-jax'] + [f'FCOS {n}' for n in names] + [f'dla / FCOS {n}'
                                                                 for n in names]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]

  def row(what, value, key, fmt=_ms, ratios_key=None):
    others = [fcos[n].get(key) for n in names]
    cells = [what, fmt(value)] + [fmt(o) for o in others]
    if ratios_key:
      cells += [_paired_ratio(fcos[n].get(ratios_key)) for n in names]
    else:
      cells += [_ratio(value, o) for o in others]
    lines.append('| ' + ' | '.join(cells) + ' |')

  if 'train_s' in dla or fcos:
    row('train step (ms)', dla.get('train_s'), 'train_s', ratios_key='train_ratios')
    per_second = lambda s: '' if s is None else f'{batch / s:.1f}'
    lines.append('| ' + ' | '.join(
        ['train images/s', per_second(dla.get('train_s'))] +
        [per_second(fcos[n].get('train_s')) for n in names] + [''] * len(names)) + ' |')
  if 'infer_s' in dla or fcos:
    row('inference (ms)', dla.get('infer_s'), 'infer_s', ratios_key='infer_ratios')
  mib = lambda b: '' if b is None else f'{b / 2**20 / batch:.0f}'
  if 'train_peak_bytes' in dla or any('train_peak_bytes' in f for f in fcos.values()):
    row('peak device memory per image, train (MiB)', dla.get('train_peak_bytes'),
        'train_peak_bytes', mib)
  elif 'train_xla_bytes' in dla:
    lines.append(f'| XLA memory of the train step per image (MiB) | '
                 f'{mib(dla["train_xla_bytes"])} |' + ' |' * 2 * len(names))
  extra = []
  if 'assign_s' in dla:
    share = (f' ({100 * dla["assign_s"] / dla["train_s"]:.1f}% of the train step)'
             if 'train_s' in dla else '')
    extra.append(f'assigner alone: {_ms(dla["assign_s"])} ms{share}')
  for key, what in (('train_compile_s', 'train step'), ('infer_compile_s', 'inference')):
    if key in dla:
      extra.append(f'compile of the {what}: {dla[key]:.1f} s')
  if 'host_ms' in dla:
    extra.append('host ms per train step (main thread): ' + ', '.join(
        f'{k} {v:.2f}' for k, v in dla['host_ms'].items()) +
        f', total {sum(dla["host_ms"].values()):.2f}')
  if 'deploy_export_s' in dla:
    extra.append(f'stablehlo export: {dla["deploy_export_s"]:.1f} s, '
                 f'{dla["deploy_bytes"] / 1e6:.1f} MB; inference through the served program '
                 f'{_ms(dla["deploy_served_s"])} ms against {_ms(dla["deploy_package_s"])} ms '
                 f'in the package (both XLA convolutions; '
                 f'{batch / dla["deploy_served_s"]:.1f} and '
                 f'{batch / dla["deploy_package_s"]:.1f} images/s)')
  if input_rate is not None:
    workers = loading.resolve_workers(config.data.num_workers)
    extra.append(f'input pipeline (COCO-like JPEGs, {workers} workers, '
                 f'{config.data.num_threads} threads each): {input_rate:.0f} images/s')
  return '\n'.join(lines + [''] + [f'- {e}' for e in extra])


def main(argv):
  del argv
  if _KEEP_FREED_MEMORY.value:
    cpu.keep_freed_memory()  # before JAX starts its backend
  hw = tuple(int(s) for s in _IMAGE_SIZE.value)
  batch_size = _PER_DEVICE_BATCH.value * jax.local_device_count() or _BATCH.value
  config = benchmark_config(_CONFIG.value, hw, batch_size, _GTS.value, _DTYPE.value)
  config_check.check(config, jax.local_device_count(), training=False)  # no weights needed
  parts = set(_PARTS.value)
  unknown = parts - set(PARTS)
  if unknown:
    raise app.UsageError(f'--parts: unknown {sorted(unknown)}')
  batch = synthetic_batch(batch_size, hw, _GTS.value, config.data.num_classes)
  variants = []
  if 'fcos' in parts:
    variants = (list(fcos_baseline.VARIANTS) if _FCOS_VARIANT.value == 'both'
                else [_FCOS_VARIANT.value])
  dla, fcos = time_side_by_side(config, batch, parts, variants, _REPEATS.value, _WARMUP.value)
  if 'assign' in parts:
    dla['assign_s'] = time_assigner(config, batch, _REPEATS.value, _WARMUP.value)
  if 'deploy' in parts:
    dla.update(time_deploy(config, batch, _REPEATS.value, _WARMUP.value))
  input_rate = input_images_per_second(config, 4) if 'input' in parts else None
  print(f'{config.model.backbone} FPN, {hw[0]}x{hw[1]}, batch {batch_size}, '
        f'{_GTS.value} GTs per image, {config.model.dtype}, {config.assigner.name}; median of '
        f'{_REPEATS.value} after {_WARMUP.value} warm-up calls, dla-jax and FCOS taking turns'
        f'{"" if _KEEP_FREED_MEMORY.value else "; freed memory not kept (--nokeep_freed_memory)"}.')
  print(f'Machine: {machine()}\n')
  print(table(config, dla, fcos, input_rate))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'machine': machine(), 'device_kind': jax.local_devices()[0].device_kind,
                 'devices': jax.local_device_count(), 'backbone': config.model.backbone,
                 'image_size': list(hw), 'batch': batch_size, 'dtype': config.model.dtype,
                 'dla': dla, 'fcos': fcos, 'input_images_per_s': input_rate}, f, indent=1)


if __name__ == '__main__':
  cli.run(main)
