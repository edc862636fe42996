"""The TensorBoard events a run writes are read back by TensorFlow's own reader: every record's
checksums, step, tag and value."""

import json
import subprocess
import sys

import pytest

from dla_jax import metric_writer
from dla_jax import tensorboard_events


def test_crc32c_gives_the_castagnoli_check_value():
  assert tensorboard_events.crc32c(b'123456789') == 0xE3069283  # RFC 3720, B.4
  assert tensorboard_events.crc32c(b'') == 0


@pytest.mark.slow  # imports TensorFlow
def test_tensorflow_reads_the_scalars_back(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write(1, {'loss': 2.5, 'lr': 1e-3})
  writer.write(300, {'AP': 0.125}, split='val')
  writer.close()
  [events] = (tmp_path / 'tensorboard').iterdir()
  assert events.name.startswith('events.out.tfevents.')
  read = ('import json, sys, tensorflow as tf\n'
          'for e in tf.compat.v1.train.summary_iterator(sys.argv[1]):\n'
          '  print(json.dumps([e.step, e.file_version, '
          '[[v.tag, v.simple_value] for v in e.summary.value]]))\n')
  result = subprocess.run([sys.executable, '-c', read, str(events)], capture_output=True,
                          text=True, timeout=300, check=True)
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert rows == [[0, 'brain.Event:2', []],
                  [1, '', [['train/loss', 2.5], ['train/lr', pytest.approx(1e-3)]]],
                  [300, '', [['val/AP', 0.125]]]]
