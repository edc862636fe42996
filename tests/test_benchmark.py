"""The benchmark runs end to end on a tiny config and prints dla-jax beside both torchvision
FCOS builds, with ratios and their range over the rounds; the table's times and rates are the
measured ones (its --json), each rate the batch over its time (the figures themselves are
measurements, not asserted)."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_prints_the_side_by_side_table_of_the_figures_it_measured(tmp_path):
  figures = tmp_path / 'figures.json'
  result = subprocess.run(
      [sys.executable, '-m', 'dla_jax.tools.benchmark', '--config', 'configs/shapes_tiny.py',
       '--image_size', '64,96', '--batch', '8', '--gts', '5', '--repeats', '1', '--warmup',
       '0', '--fcos_variant', 'both', '--json', str(figures)], cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  number = r'(\d+\.\d+)'
  paired = number + r' \(' + number + '-' + number + r'\)'  # median of rounds (range)
  ratios = r'\| ' + r' \| '.join([number] * 3 + [paired] * 2) + r' \|'
  for what in (r'train step \(ms\)', r'inference \(ms\)'):
    match = re.search(r'\| ' + what + ' ' + ratios, out)
    assert match, out
    for median, low, high in (match.groups()[3:6], match.groups()[6:9]):
      assert float(low) <= float(median) <= float(high), match.group(0)
  assert re.search(r'assigner alone: [\d.]+ ms \([\d.]+% of the train step\)', out), out
  assert re.search(r'compile of the train step: [\d.]+ s', out), out
  assert re.search(r'input pipeline \(COCO-like JPEGs, \d+ workers, \d+ threads each\): '
                   r'\d+ images/s', out), out
  assert 'resnet18 FPN, 64x96, batch 8, 5 GTs per image, float32, dla' in out
  measured = json.loads(figures.read_text())
  assert measured['batch'] == 8
  contenders = [measured['dla'], measured['fcos']['no_weights'],
                measured['fcos']['imagenet_recipe']]
  step_ms = re.search(r'\| train step \(ms\) \| ' + r' \| '.join([number] * 3), out).groups()
  rates = re.search(r'\| train images/s \| ' + r' \| '.join([number] * 3), out).groups()
  for contender, ms, rate in zip(contenders, step_ms, rates):
    seconds = contender['train_s']
    assert seconds > 0
    assert ms == f'{1e3 * seconds:.1f}' and rate == f'{8 / seconds:.1f}', (contender, ms, rate)
  assert measured['input_images_per_s'] > 0
