"""Everything worth measuring on an accelerator, in one command with a time limit:

  python -m dla_jax.tools.accelerator_suite --out DIR [--time_budget_s 450]

Cases, cheapest first (work per step: a train image counts 3, an inference image 1):

- training at the config's padded size (COCO: 800 x 1344; ``--image_size`` sets another) in
  bfloat16 and float32 (``--dtypes``) at 2, 4 and 8 images per device (``--train_per_device``):
  images/s, compile seconds, the device's peak memory (``memory_stats()['peak_bytes_in_use']``),
  XLA's account of the step's memory, and the host's main-thread ms per step (transfer,
  dispatch, metric accumulation);
- inference with NMS at 8 images per device (``--infer_per_device``), in both dtypes.

Each case is ``python -m dla_jax.tools.benchmark`` with explicit flags (``case_command``; the
``--config`` flag and its overrides passed on) in its own process, so that each peak is its own
and a case that runs out of memory cannot take the others with it. When torch imports with
CUDA, each case also runs torchvision's FCOS R50-FPN (``fcos_baseline``, the ImageNet recipe's
build) with AMP in the same process, the two taking turns (see ``benchmark``). Each case's
figures are medians over ``--repeats`` steps after ``--warmup`` untimed ones.

The suite keeps within ``--time_budget_s``: a case that the time left cannot hold at the pace of
the case before it is dropped with every larger case; a case still running at the limit is
stopped; after an out-of-memory case, larger batches of that kind and dtype are dropped. Each
dropped case is named, with the reason, in DIR/suite.md and DIR/suite.json, written after every
case. DIR/<case>.log holds each case's output.
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

from dla_jax import cli
from dla_jax.models import detector

OUT_OF_MEMORY = ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory')


@dataclasses.dataclass(frozen=True)
class Case:
  part: str  # 'train' or 'infer'
  dtype: str
  per_device: int

  @property
  def name(self) -> str:
    return f'{self.part}_{self.dtype}_b{self.per_device}'

  @property
  def work(self) -> int:
    """Work per device and step, in inference images."""
    return self.per_device * (3 if self.part == 'train' else 1)


def cases(train_batches: list[int], infer_batch: int, dtypes: list[str]) -> list[Case]:
  """Every case, cheapest first; at equal work, in the order of ``dtypes``."""
  every = [Case('train', d, b) for b in train_batches for d in dtypes]
  every += [Case('infer', d, infer_batch) for d in dtypes]
  return sorted(every, key=lambda c: (c.work, c.part, dtypes.index(c.dtype)))


def torch_has_cuda() -> bool:
  """Whether torch imports with a CUDA device, asked in a child process so that this one never
  holds an accelerator."""
  if importlib.util.find_spec('torch') is None:
    return False
  probe = 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
  try:
    return subprocess.run([sys.executable, '-c', probe], capture_output=True,
                          timeout=120).returncode == 0
  except subprocess.TimeoutExpired:
    return False


def config_args(argv: list[str]) -> list[str]:
  """The ``--config`` flag and its ``--config.FIELD=VALUE`` overrides of ``argv``, to pass on."""
  args = []
  for i, arg in enumerate(argv):
    name = arg.partition('=')[0]
    if name != '--config' and not name.startswith('--config.'):
      continue
    args.append(arg)
    if '=' not in arg and i + 1 < len(argv) and not argv[i + 1].startswith('-'):
      args.append(argv[i + 1])  # the value, given as the next argument
  return args


def case_command(case: Case, out: pathlib.Path, image_size: tuple[int, int], fcos: bool,
                 base: list[str], repeats: int, warmup: int) -> list[str]:
  """``benchmark``'s command line for one case, with ``base`` (the config flags) first, timing
  ``repeats`` calls after ``warmup``."""
  parts = [case.part] + (['host'] if case.part == 'train' else []) + (['fcos'] if fcos else [])
  return [sys.executable, '-m', 'dla_jax.tools.benchmark', *base,
          '--image_size', ','.join(map(str, image_size)), '--per_device_batch',
          str(case.per_device), '--dtype', case.dtype, '--parts', ','.join(parts),
          '--fcos_variant', 'imagenet_recipe', '--repeats', str(repeats), '--warmup',
          str(warmup), '--json', str(out / f'{case.name}.json')]


def run_case(case: Case, command: list[str], out: pathlib.Path, timeout: float) -> dict:
  """Runs one case; its figures, or why it has none ('stopped at the time limit', 'out of
  memory', 'failed: ...')."""
  log = out / f'{case.name}.log'
  start = time.monotonic()
  with open(log, 'w') as f:
    try:
      code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT,
                            timeout=max(timeout, 1)).returncode
    except subprocess.TimeoutExpired:
      code = None
  result = {'case': case.name, 'part': case.part, 'dtype': case.dtype,
            'per_device': case.per_device, 'wall_s': time.monotonic() - start}
  text = log.read_text(errors='replace')
  if code is None:
    result['dropped'] = 'stopped at the time limit'
  elif code != 0:
    if any(marker in text for marker in OUT_OF_MEMORY):
      result['dropped'] = 'out of memory'
    else:
      last = [line for line in text.splitlines() if line.strip()][-1:] or ['no output']
      result['dropped'] = f'failed (exit {code}): {last[0][:200]}'
  else:
    result.update(json.loads((out / f'{case.name}.json').read_text()))
  return result


def run_suite(out: pathlib.Path, budget_s: float, base: list[str], image_size: tuple[int, int],
              train_batches: list[int], infer_batch: int, dtypes: list[str],
              fcos: bool, repeats: int, warmup: int) -> list[dict]:
  """Runs the cases within ``budget_s`` (see the module doc), writing DIR/suite.json and
  DIR/suite.md after each; returns the results, dropped cases included."""
  out.mkdir(parents=True, exist_ok=True)
  deadline = time.monotonic() + budget_s
  results, stop_reason, out_of_memory = [], None, set()
  last_wall = {}  # part -> wall seconds of its last finished case
  for case in cases(train_batches, infer_batch, dtypes):
    left = deadline - time.monotonic()
    pace = last_wall.get(case.part, max(last_wall.values(), default=0))
    if stop_reason:
      reason = stop_reason
    elif (case.part, case.dtype) in out_of_memory:
      reason = 'a smaller batch ran out of memory'
    elif pace > left:
      stop_reason = reason = (f'time budget: {left:.0f} s left, the case before took '
                              f'{pace:.0f} s')
    else:
      reason = None
    if reason:
      results.append({'case': case.name, 'part': case.part, 'dtype': case.dtype,
                      'per_device': case.per_device, 'dropped': reason})
    else:
      result = run_case(case, case_command(case, out, image_size, fcos, base, repeats, warmup),
                        out, left)
      results.append(result)
      if result.get('dropped') == 'stopped at the time limit':
        stop_reason = 'time budget: spent'
      elif result.get('dropped') == 'out of memory':
        out_of_memory.add((case.part, case.dtype))
      else:
        last_wall[case.part] = result['wall_s']
    (out / 'suite.json').write_text(json.dumps(results, indent=1))
    (out / 'suite.md').write_text(report(results))
  return results


def _cell(value, fmt: str) -> str:
  return '' if value is None else format(value, fmt)


def report(results: list[dict]) -> str:
  """Markdown rows for docs/performance.md, then the dropped cases."""
  done = [r for r in results if 'dropped' not in r]
  lines = []
  if done:
    first = done[0]
    lines += [f'{first["backbone"]} FPN, {first["image_size"][0]}x{first["image_size"][1]}, '
              f'{first["devices"]} x {first["device_kind"]}; {first["machine"]}.', '',
              '| case | dtype | images per device | images/s | step (ms) | compile (s) | '
              'peak memory per device (MiB) | XLA memory per device (MiB) | host ms per step | '
              'FCOS AMP images/s | dla / FCOS time |',
              '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in done:
    dla, part = r['dla'], r['part']
    seconds = dla.get(f'{part}_s')
    fcos = r['fcos'].get('imagenet_recipe', {})
    fcos_seconds = fcos.get(f'{part}_s')
    ratios = fcos.get(f'{part}_ratios')
    peak = dla.get('peak_bytes')
    host = dla.get('host_ms')
    lines.append(' | '.join([
        f'| {part}', r['dtype'], str(r['per_device']),
        _cell(seconds and r['batch'] / seconds, '.1f'), _cell(seconds and 1e3 * seconds, '.1f'),
        _cell(dla.get(f'{part}_compile_s'), '.1f'),
        _cell(peak and peak / 2**20, ',.0f'),  # both of the first device
        _cell(dla.get('train_xla_bytes') and dla['train_xla_bytes'] / 2**20, ',.0f'),
        _cell(host and sum(host.values()), '.2f'),
        _cell(fcos_seconds and r['batch'] / fcos_seconds, '.1f'),
        _cell(ratios and sorted(ratios)[len(ratios) // 2], '.2f')]) + ' |')
  dropped = [r for r in results if 'dropped' in r]
  if dropped:
    lines += [''] + [f'- dropped {r["case"]}: {r["dropped"]}' for r in dropped]
  return '\n'.join(lines) + '\n'


def _define_flags():
  """The command line's flags, defined only when this module runs as one, as its ``--config``
  and ``--dtypes`` would clash with another tool's in a process that imports both (the tests)."""
  cli.define_config_flag('config', 'dla_r50_fpn_1x_coco',
                         'Experiment config to measure; passed on to each case.')
  flags.DEFINE_string('out', None, 'Folder of the suite\'s JSON, markdown and logs.')
  flags.DEFINE_integer('time_budget_s', 450, 'Wall seconds the suite may take; it drops what '
                       'would not fit, largest first, and says which.')
  flags.DEFINE_list('image_size', None, 'Input height,width in pixels (multiples of 32; '
                    'default: the config\'s padded size).')
  flags.DEFINE_list('train_per_device', ['2', '4', '8'],
                    'Training images per device, one case each.')
  flags.DEFINE_integer('infer_per_device', 8, 'Inference images per device.')
  flags.DEFINE_list('dtypes', ['bfloat16', 'float32'], 'Compute dtypes, one case each.')
  flags.DEFINE_integer('repeats', 20, 'Timed steps per case, of which the median is reported '
                       '(also the steps of the host measurement).')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps per case before timing.')
  flags.mark_flag_as_required('out')


def main(argv):
  del argv
  f = flags.FLAGS
  unknown = set(f.dtypes) - set(detector.DTYPES)
  if unknown:
    raise app.UsageError(f'--dtypes: {sorted(unknown)} not among {sorted(detector.DTYPES)}')
  start = time.monotonic()
  fcos = torch_has_cuda()
  image_size = (tuple(int(s) for s in f.image_size) if f.image_size
                else tuple(f.config.data.image_size))
  results = run_suite(pathlib.Path(f.out), f.time_budget_s - (time.monotonic() - start),
                      config_args(sys.argv[1:]), image_size,
                      [int(b) for b in f.train_per_device], f.infer_per_device, f.dtypes, fcos,
                      f.repeats, f.warmup)
  print(report(results), end='')
  print(f'{len(results)} cases in {time.monotonic() - start:.0f} s; JSON, markdown and logs in '
        f'{os.path.abspath(f.out)}')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
