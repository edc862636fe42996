"""What the COCO train step costs on accelerators, known before one runs it: the step compiled
ahead of time for simulated CPU devices, with the graph a GPU runs.

  python -m dla_jax.tools.step_cost                      # R50-FPN 1x, 8 devices, 800 x 1344
  python -m dla_jax.tools.step_cost --dtypes bfloat16 --out step_cost.json

The step is ``step.train_step`` jitted over a mesh of ``--devices`` CPU devices
(``--xla_force_host_platform_device_count``, set here before JAX starts), at the config's padded
size and global batch, with XLA's own convolutions and no CPU fusion barriers
(``detector.build_detector(config, backend='gpu')``). Nothing runs: the step is lowered and
compiled only. Per compute dtype it reports:

- memory per device from the compiled step's ``memory_analysis()``: arguments, outputs (and how
  much of them alias the donated arguments) and temporaries. XLA:CPU assigns buffers its own
  way, so these approximate a GPU's; a GPU's peak also holds its allocator's slack.
- FLOPs per image of the whole step (``cost_analysis()`` of the global program), beside the
  forward pass's FLOPs that ``dla_jax.tools.summary`` prints: a train step does about 3x the
  forward (forward, and the backward's two products per layer).
- the collectives of the partitioned program, with their sizes: with a replicated state and a
  split batch, the gradient all-reduce (about the parameters' bytes) and nothing that gathers
  activations. Also its sorts, scatters and while loops, which GPUs run slower than matmuls.
- a projection of the step time on one H100 SXM: the FLOPs per device at 30% and 50% of the
  dtype's dense tensor-core peak (bf16 989.4 TFLOP/s; float32 as TF32, 494.7). A projection,
  not a measurement.
"""

import collections
import json
import os
import re
import sys

from absl import app
from absl import flags

def _simulate_devices(argv) -> None:
  """Asks XLA:CPU for the ``--devices`` count before JAX starts (flags are parsed later)."""
  count = next((a.split('=', 1)[1] for a in argv if a.startswith('--devices=')), '8')
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={count}')
  os.environ['JAX_PLATFORMS'] = 'cpu'


if __name__ == '__main__':
  _simulate_devices(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dla_jax import cli
from dla_jax import config_check
from dla_jax import optim
from dla_jax import step as step_lib
from dla_jax.models import detector
from dla_jax.tools import timing


STEPS_PER_EPOCH = 7330  # COCO train2017 (117,266 images with boxes) at batch 16
# H100 SXM dense tensor-core peaks (NVIDIA's datasheet), TFLOP/s: float32 matmuls as TF32.
H100_PEAK_TFLOPS = {'bfloat16': 989.4, 'float32': 494.7}
UTILISATIONS = (0.3, 0.5)
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
SLOW_OPS = ('sort', 'scatter', 'while')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4,
          's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?\S+\s*=\s*(?P<shape>.*?)\s+'
                          r'(?P<op>[a-z][a-z0-9\-]*)\(')
_ARRAY = re.compile(r'\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]')


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape: an array ``f32[2,3]{1,0}`` or a tuple of them."""
  total = 0
  for array in _ARRAY.finditer(shape):
    dims = [int(d) for d in array['dims'].split(',') if d]
    total += _BYTES.get(array['dtype'], 4) * int(np.prod(dims, dtype=np.int64))
  return total


def short_shape(shape: str) -> str:
  """An HLO result shape without layouts; a tuple of more than 4 arrays as their count."""
  shape = re.sub(r'/\*[^*]*\*/', '', re.sub(r'\{[^{}]*\}', '', shape))
  arrays = _ARRAY.findall(shape)
  return f'tuple of {len(arrays)} arrays' if len(arrays) > 4 else shape


def hlo_ops(hlo_text: str, ops) -> dict[str, collections.Counter]:
  """Instructions of ``ops`` in an HLO module's text (async ``-start`` halves count as the op):
  op -> Counter of result shapes (``short_shape``) and their bytes, as (shape, bytes) keys."""
  found = {op: collections.Counter() for op in ops}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    op = match['op'].removesuffix('-start')
    if op in found:
      found[op][short_shape(match['shape']), shape_bytes(match['shape'])] += 1
  return found


def step_config(config: ml_collections.ConfigDict, dtype: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.dtype = dtype
  config.model.conv_impl = 'xla'
  return config


def compile_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(lowered, compiled, lower + compile seconds) of the train step for abstract inputs of the
  config's global batch and padded size, with the graph a GPU runs."""
  model = detector.build_detector(config, backend='gpu')
  variables = detector.abstract_variables(model)
  tx = optim.make_optimizer(config, model.trainable(variables['params']), STEPS_PER_EPOCH)
  state = jax.eval_shape(lambda v: step_lib.create_train_state(v, tx), variables)
  b, (h, w), g = config.train.global_batch, config.data.image_size, config.data.max_boxes
  batch = {'images': ((b, h, w, 3), jnp.uint8), 'image_hw': ((b, 2), jnp.int32),
           'boxes': ((b, g, 4), jnp.float32), 'labels': ((b, g), jnp.int32),
           'valid': ((b, g), jnp.bool_)}
  batch = {k: jax.ShapeDtypeStruct(*batch[k]) for k in step_lib.TRAIN_FIELDS}
  jitted = step_lib.jit_train_step(mesh, model=model, tx=tx, config=config,
                                   steps_per_epoch=STEPS_PER_EPOCH)

  def lower_and_compile():
    lowered = jitted.lower(state, batch)
    return lowered, lowered.compile()

  (lowered, compiled), seconds = timing.timed(lower_and_compile)
  return lowered, compiled, seconds


def step_cost(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
              forward_flops: float) -> dict:
  """The figures of one compiled step (see the module doc), as a JSON-able dict."""
  lowered, compiled, seconds = compile_step(config, mesh)
  batch, devices = config.train.global_batch, mesh.devices.size
  memory = compiled.memory_analysis()
  flops = lowered.cost_analysis()['flops']
  found = hlo_ops(compiled.as_text(), COLLECTIVES + SLOW_OPS)
  params = detector.abstract_variables(detector.build_detector(config, backend='gpu'))['params']
  peak = H100_PEAK_TFLOPS[config.model.dtype] * 1e12
  return {
      'dtype': config.model.dtype, 'devices': devices, 'global_batch': batch,
      'image_size': list(config.data.image_size), 'compile_s': seconds,
      'memory_per_device_bytes': {
          'arguments': memory.argument_size_in_bytes, 'outputs': memory.output_size_in_bytes,
          'aliased': memory.alias_size_in_bytes, 'temporaries': memory.temp_size_in_bytes},
      'param_bytes': sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)),
      'flops_per_image': flops / batch, 'forward_flops_per_image': forward_flops,
      'ops': {op: [{'shape': s, 'bytes': b, 'count': n} for (s, b), n in shapes.most_common()]
              for op, shapes in found.items()},
      'projected_h100_step_ms': {
          f'{u:.0%}': 1e3 * flops / devices / (peak * u) for u in UTILISATIONS},
      'h100_peak_tflops': peak / 1e12,
  }


def _size(num_bytes: int) -> str:
  return (f'{num_bytes / 2**20:,.1f} MiB' if num_bytes >= 2**20 else
          f'{num_bytes / 2**10:,.1f} KiB')


def report(costs: list[dict]) -> str:
  """Markdown: one table of memory, FLOPs and projections by dtype, then the HLO ops."""
  mib = lambda b: f'{b / 2**20:,.0f}'
  lines = ['| | ' + ' | '.join(c['dtype'] for c in costs) + ' |',
           '| --- |' + ' --- |' * len(costs)]

  def row(what, cell):
    lines.append(f'| {what} | ' + ' | '.join(cell(c) for c in costs) + ' |')

  memory = lambda key: lambda c: mib(c['memory_per_device_bytes'][key])
  row('arguments per device (MiB)', memory('arguments'))
  row('outputs per device (MiB)', memory('outputs'))
  row('  of which alias donated arguments (MiB)', memory('aliased'))
  row('temporaries per device (MiB)', memory('temporaries'))
  row('train step GFLOPs per image', lambda c: f'{c["flops_per_image"] / 1e9:.1f}')
  row('forward GFLOPs per image (summary)', lambda c: f'{c["forward_flops_per_image"] / 1e9:.1f}')
  row('train / forward', lambda c: f'{c["flops_per_image"] / c["forward_flops_per_image"]:.2f}')
  for u in UTILISATIONS:
    row(f'projected H100 step (ms) at {u:.0%} of peak',
        lambda c, u=u: f'{c["projected_h100_step_ms"][f"{u:.0%}"]:.1f}')
  row('projected H100 images/s per GPU at 30%',
      lambda c: f'{c["global_batch"] / c["devices"] / c["projected_h100_step_ms"]["30%"] * 1e3:.0f}')
  row('lower + compile on this CPU (s)', lambda c: f'{c["compile_s"]:.0f}')
  lines.append('')
  for c in costs:
    lines.append(f'HLO of the {c["dtype"]} step (partitioned, one device), parameters '
                 f'{mib(c["param_bytes"])} MiB:')
    for op, shapes in c['ops'].items():
      if not shapes:
        lines.append(f'- {op}: none')
        continue
      total = sum(s['count'] for s in shapes)
      size = sum(s['count'] * s['bytes'] for s in shapes)
      largest = ', '.join(f'{s["count"]} x {s["shape"]} ({_size(s["bytes"])})' for s in
                          sorted(shapes, key=lambda s: -s['bytes'])[:4])
      lines.append(f'- {op}: {total}, {_size(size)} in all; largest: {largest}')
    lines.append('')
  return '\n'.join(lines)


def _define_flags():
  """The command line's flags, defined only when this module runs as one, as its ``--config``
  would clash with another tool's in a process that imports both (the tests)."""
  flags.DEFINE_integer('devices', 8, 'Simulated CPU devices of the mesh.')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to compile.')
  flags.DEFINE_string('out', '', 'Also write the figures to this JSON file.')
  cli.define_config_flag('config', 'dla_r50_fpn_1x_coco', 'Experiment config to compile.')


def main(argv):
  del argv
  devices = flags.FLAGS.devices
  if jax.default_backend() != 'cpu' or jax.device_count() != devices:
    raise app.UsageError(
        f'step_cost needs {devices} CPU devices; JAX has {jax.device_count()} '
        f'{jax.default_backend()} devices. Run it as python -m dla_jax.tools.step_cost.')
  config = flags.FLAGS.config
  config_check.check(config, devices, training=False)  # costs need no ImageNet weights
  mesh = step_lib.make_mesh(jax.devices())
  forward = detector.forward_flops(config)
  costs = []
  for dtype in flags.FLAGS.dtypes:
    costs.append(step_cost(step_config(config, dtype), mesh, forward))
  h, w = config.data.image_size
  print(f'{config.model.backbone}-FPN train step, {h} x {w}, global batch '
        f'{config.train.global_batch} over {devices} simulated devices, XLA '
        f'convolutions, jax {jax.__version__}. Memory is XLA:CPU\'s buffer assignment, an '
        'approximation of a GPU\'s; step times are projections from FLOPs, not measurements.\n')
  print(report(costs))
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, 'w') as f:
      json.dump(costs, f, indent=1)


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
