"""dla-jax beside torchvision's FCOS R50-FPN, on identical inputs in the same process.

  python -m dla_jax.tools.benchmark --config configs/dla_r50_fpn_1x_coco.py \
      --image_size 512,512 --batch 2
  python -m dla_jax.tools.benchmark --image_size 800,1344 --batch 16 --dtype bfloat16  # a GPU
  python -m dla_jax.tools.benchmark --suite accelerator --out DIR  # all of it, in minutes

Times, as the median of ``--repeats`` calls after ``--warmup`` calls (each call waited for),
dla-jax's and FCOS's calls taking turns so that a machine whose speed drifts slows both alike.
Each dla / FCOS ratio is the median over the rounds of dla-jax's time over FCOS's in the same
round, with the range over the rounds beside it. What is timed:

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
- the input pipeline: COCO-like JPEGs read, resized, flipped and padded to the size;
- the stablehlo export (``--parts deploy``): its time and size, and inference through the
  deserialized program against the package's own eval step.

The same uint8 images and boxes go to both. FCOS's resize is pinned to the image size (its
transform still normalises and pads), its classes set to the config's, its score threshold to
the config's. ``--fcos_variant`` picks torchvision's FCOS as built without any weights
(``fcos_resnet50_fpn(weights=None, weights_backbone=None)``: trainable BatchNorm, every stage
trained) or as built for ImageNet weights (frozen BatchNorm, stem and stage 1 frozen: the
recipe dla-jax's COCO configs follow); ``both`` times each. With ``--dtype bfloat16`` dla-jax
computes in bfloat16 and FCOS runs under autocast (bfloat16 on CPU, float16 with a grad scaler
on CUDA). ``--suite accelerator`` runs the cases worth measuring on an accelerator within a time
limit (``accelerator_suite``).
"""

import json
import os
import pathlib
import platform
import statistics
import tempfile
import time
from typing import Any, Callable

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
from dla_jax.models import detector
from dla_jax.tools import accelerator_suite
from dla_jax.tools import bench_input

_CONFIG = cli.define_config_flag('config', 'dla_r50_fpn_1x_coco', 'Experiment config to time.')
_IMAGE_SIZE = flags.DEFINE_list('image_size', ['512', '512'], 'Input height,width in pixels '
                                '(multiples of 32); sets data.image_size and data.scale.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Images per step, over all local devices.')
_PER_DEVICE_BATCH = flags.DEFINE_integer('per_device_batch', 0,
                                         'Images per step and local device (instead of --batch).')
_GTS = flags.DEFINE_integer('gts', 20, 'Ground-truth boxes per image.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                           'Compute dtype (default: the config\'s model.dtype on this backend).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing.')
PARTS = ('train', 'infer', 'assign', 'host', 'input', 'fcos', 'deploy')
_PARTS = flags.DEFINE_list('parts', ['train', 'infer', 'assign', 'input', 'fcos'],
                           f'What to time: {", ".join(PARTS)}.')
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep the memory XLA:CPU frees for its next call '
    '(dla_jax/cpu/host_memory.py), for both contenders, as dla_jax.main does by default; '
    '--nokeep_freed_memory times without it.')
_FCOS_VARIANT = flags.DEFINE_enum('fcos_variant', 'no_weights',
                                  ['no_weights', 'imagenet_recipe', 'both'],
                                  'Which torchvision FCOS build to time (see the module doc).')
_JSON = flags.DEFINE_string('json', '', 'Also write the figures to this JSON file.')
_SUITE = flags.DEFINE_enum('suite', None, ['accelerator'],
                           'Run a suite of measurements instead of one: accelerator '
                           '(dla_jax/tools/accelerator_suite.py); writes to --out.')
_OUT = flags.DEFINE_string('out', '', 'Folder of the suite\'s JSON, markdown and logs.')
_TIME_BUDGET = flags.DEFINE_integer('time_budget_s', 450,
                                    'Wall seconds the suite may take; it drops what would not '
                                    'fit, largest first, and says which.')

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


def interleaved_times(calls: dict[str, Callable[[], Any]], repeats: int,
                      warmup: int) -> dict[str, list[float]]:
  """Wall seconds of each call in each of ``repeats`` rounds, the calls taking turns: each round
  times every call once, in an order rotated by one per round, so that a machine whose speed
  drifts (a shared VM) slows every contender alike. Each call must wait for its own results."""
  names = list(calls)
  for _ in range(warmup):
    for name in names:
      calls[name]()
  times = {name: [] for name in names}
  for round_ in range(repeats):
    for name in names[round_ % len(names):] + names[:round_ % len(names)]:
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median_seconds(call: Callable[[], Any], repeats: int, warmup: int) -> float:
  """Median wall time of ``call()``; ``call`` must wait for its own results."""
  return statistics.median(interleaved_times({'call': call}, repeats, warmup)['call'])


def _compile(jitted, *args) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _peak_device_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def dla_calls(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray],
              parts) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
  """dla-jax's 'train' step and 'infer' (as ``parts`` asks), each a call that waits for its
  results, and their compile seconds, the train step's XLA memory bytes and (with 'host' in
  ``parts``) the host's ms per step around it. Inference runs on the train state's current
  weights, which the train step donates and replaces."""
  mesh = step_lib.make_mesh(jax.local_devices())
  model = detector.build_detector(config)
  variables = detector.init_variables(model, config, jax.random.key(0))
  tx = optim.make_optimizer(config, model.trainable(variables['params']), TRAIN_STEPS_PER_EPOCH)
  on_device = {k: jax.device_put(v, step_lib.batch_sharding(mesh)) for k, v in batch.items()}
  state = jax.device_put(step_lib.create_train_state(variables, tx), step_lib.replicated(mesh))
  calls, info = {}, {}
  if 'train' in parts:
    train_batch = {k: on_device[k] for k in step_lib.TRAIN_FIELDS}
    step, info['train_compile_s'] = _compile(step_lib.jit_train_step(
        mesh, model=model, tx=tx, config=config, steps_per_epoch=TRAIN_STEPS_PER_EPOCH),
        state, train_batch)
    memory = step.memory_analysis()
    if memory is not None:
      info['train_xla_bytes'] = (memory.argument_size_in_bytes + memory.output_size_in_bytes +
                                 memory.temp_size_in_bytes)
    if 'host' in parts:
      state, info['host_ms'] = host_ms_per_step(step, state, batch, mesh)

    def train_call():
      nonlocal state
      state, metrics = step(state, train_batch)
      jax.block_until_ready((state, metrics))

    calls['train'] = train_call
  if 'infer' in parts:
    eval_batch = {k: on_device[k] for k in step_lib.EVAL_FIELDS}
    infer, info['infer_compile_s'] = _compile(
        step_lib.jit_eval_step(mesh, model=model, config=config), state.params,
        state.batch_stats, eval_batch)
    calls['infer'] = lambda: jax.block_until_ready(
        infer(state.params, state.batch_stats, eval_batch))
  return calls, info


def host_ms_per_step(step, state: step_lib.TrainState, batch: dict[str, np.ndarray],
                     mesh: jax.sharding.Mesh,
                     num_steps: int = 10) -> tuple[step_lib.TrainState, dict[str, float]]:
  """The training loop's main-thread ms per step around the compiled train ``step``
  (``bench_input.host_loop_ms``), from a host batch already loaded: transfer, dispatch and
  metric accumulation. Returns the state after those steps (``state`` is donated to them)."""

  def run_step(on_device):
    nonlocal state
    state, metrics = step(state, on_device)
    return metrics

  ms = bench_input.host_loop_ms(
      lambda: batch, bench_input.put_fields(step_lib.batch_sharding(mesh),
                                            step_lib.TRAIN_FIELDS), run_step, num_steps)
  return state, ms


def time_deploy(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], repeats: int,
                warmup: int) -> dict[str, float]:
  """The stablehlo export (``dla_jax/export_stablehlo.py``) of a random initialisation: its
  seconds and bytes, and seconds per call of its deserialized program against the package's own jitted
  eval step on the same padded batch, taking turns. Both use XLA's own convolutions, so this
  compares the program, not the CPU's convolution choices."""
  config = export_stablehlo.portable_config(config)
  model = detector.build_detector(config)
  variables = detector.init_variables(model, config, jax.random.key(0))
  batch_stats = variables.get('batch_stats', {})
  inputs = {k: batch[k] for k in step_lib.EVAL_FIELDS}
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp) / 'export'
    start = time.perf_counter()
    export_stablehlo.export(config, variables['params'], batch_stats,
                            [str(i) for i in range(config.data.num_classes)], str(folder), 0)
    figures = {'deploy_export_s': time.perf_counter() - start,
               'deploy_bytes': sum(f.stat().st_size for f in folder.iterdir())}
    served = serving.load(str(folder))
    program = served.program(tuple(batch['images'].shape[1:3]))
    mesh = step_lib.make_mesh(jax.local_devices()[:1])
    eval_step = step_lib.jit_eval_step(mesh, model=model, config=config)
    times = interleaved_times({
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
  return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats, warmup)


def input_images_per_second(config: ml_collections.ConfigDict, num_batches: int) -> float:
  """images/s of the training input pipeline on COCO-like JPEGs at the config's size, batch,
  workers and threads."""
  config = ml_collections.ConfigDict(config.to_dict())
  with tempfile.TemporaryDirectory() as tmp:
    config.data.source, config.data.num_classes = 'coco_json', 1
    config.data.train_images, config.data.train_annotations = bench_input.write_coco_like(
        pathlib.Path(tmp), (num_batches + 2) * config.train.global_batch)
    return bench_input.images_per_second(config, num_batches)


def build_fcos(variant: str, config: ml_collections.ConfigDict):
  """torchvision's FCOS R50-FPN, resize pinned to the input size, test settings as config."""
  import torchvision  # pylint: disable=g-import-not-at-top  (optional extra)
  from torchvision.models.detection import backbone_utils  # pylint: disable=g-import-not-at-top
  from torchvision.ops import misc  # pylint: disable=g-import-not-at-top
  from torchvision.ops import feature_pyramid_network  # pylint: disable=g-import-not-at-top
  h, w = config.data.image_size
  settings = dict(num_classes=config.data.num_classes, min_size=min(h, w), max_size=max(h, w),
                  score_thresh=config.inference.score_threshold,
                  nms_thresh=config.inference.nms_iou,
                  detections_per_img=config.inference.max_detections,
                  topk_candidates=config.inference.pre_nms_topk)
  if variant == 'no_weights':
    return torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                                          **settings)
  # What fcos_resnet50_fpn builds for ImageNet weights, without loading them.
  resnet = torchvision.models.resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d)
  backbone = backbone_utils._resnet_fpn_extractor(  # pylint: disable=protected-access
      resnet, 3, returned_layers=[2, 3, 4],
      extra_blocks=feature_pyramid_network.LastLevelP6P7(256, 256))
  return torchvision.models.detection.FCOS(backbone, **settings)


def fcos_calls(variant: str, config: ml_collections.ConfigDict,
               batch: dict[str, np.ndarray]) -> dict[str, Callable[[], None]]:
  """FCOS's 'train' step (forward with targets, backward, SGD) and 'infer', each a call that
  waits for its results."""
  import torch  # pylint: disable=g-import-not-at-top  (optional extra)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model = build_fcos(variant, config).to(device)
  images = [torch.from_numpy(i).to(device).permute(2, 0, 1).float() / 255 for i in
            batch['images']]
  targets = [{'boxes': torch.from_numpy(b).to(device),
              'labels': torch.from_numpy(l).long().to(device)}  # FCOS's labels are 0-based
             for b, l in zip(batch['boxes'], batch['labels'])]
  bf16 = config.model.dtype == 'bfloat16'
  autocast_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
  autocast = lambda: torch.autocast(device.type, dtype=autocast_dtype, enabled=bf16)
  scaler = torch.amp.GradScaler(device.type, enabled=bf16 and device.type == 'cuda')
  optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              lr=1e-4, momentum=0.9, weight_decay=1e-4)
  sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None

  def train_call():
    model.train()
    with autocast():
      losses = model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(sum(losses.values())).backward()
    scaler.step(optimizer)
    scaler.update()
    sync()

  def infer_call():
    model.eval()
    with torch.no_grad(), autocast():
      model(images)
    sync()

  return {'train': train_call, 'infer': infer_call}


def time_side_by_side(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], parts,
                      fcos_variants: list[str], repeats: int,
                      warmup: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """dla-jax's and each FCOS build's train step and inference (those of ``parts``), timed
  interleaved (``interleaved_times``), with the train step's peak memory where the device
  reports it (FCOS's counts the other builds' resident weights too). Returns dla-jax's figures
  (with compile seconds and memory) and FCOS's by build, with dla-jax's time over FCOS's in
  each round (``{part}_ratios``)."""
  dla_part_calls, dla = dla_calls(config, batch, parts)
  fcos = {variant: {} for variant in fcos_variants}
  contenders = {part: {'dla': call} for part, call in dla_part_calls.items()}
  for variant in fcos_variants:
    for part, call in fcos_calls(variant, config, batch).items():
      if part in contenders:
        contenders[part][variant] = call
  for part, calls in contenders.items():
    times = interleaved_times(calls, repeats, warmup)
    for name, seconds in times.items():
      (dla if name == 'dla' else fcos[name])[f'{part}_s'] = statistics.median(seconds)
      if name != 'dla':  # the round's dla-jax call over the same round's FCOS call
        fcos[name][f'{part}_ratios'] = [d / f for d, f in zip(times['dla'], seconds)]
  peak = _peak_device_bytes()
  if peak is not None:
    dla['peak_bytes'] = peak
  if 'train' in contenders and peak is not None:
    dla['train_peak_bytes'] = peak
    for variant in fcos_variants:  # one more step from a reset peak, build by build
      import torch  # pylint: disable=g-import-not-at-top  (optional extra)
      torch.cuda.reset_peak_memory_stats()
      contenders['train'][variant]()
      fcos[variant]['train_peak_bytes'] = torch.cuda.max_memory_allocated()
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
  if _SUITE.value:
    accelerator_suite.main(_OUT.value, _TIME_BUDGET.value, _CONFIG.value)
    return
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
    variants = (['no_weights', 'imagenet_recipe'] if _FCOS_VARIANT.value == 'both'
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
