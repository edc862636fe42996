"""With ``keep_freed_memory``, the large buffers a jitted program allocates stop faulting in
fresh pages at every call; without it, on glibc, they fault every call (what the setting is
for). Where it does not apply (no glibc, an accelerator) it changes nothing, says why, and
never raises.

The cases that keep memory run in their own process: the setting is process-wide and must
precede JAX's backend."""

import ctypes
import importlib.util
import os
import platform
import subprocess
import sys

import jax
import pytest

from dla_jax.cpu import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 256 MiB allocated and freed per call: a matmul's [65536, 1024] float32 output, dropped.
_PROGRAM = """
import resource, sys
from dla_jax.cpu import host_memory
if sys.argv[1] == 'keep':
  host_memory.keep_freed_memory()
import jax
f = jax.jit(lambda x, w: x @ w)
x, w = (jax.random.normal(jax.random.key(0), shape) for shape in ((65536, 16), (16, 1024)))
# Untimed calls past the start-up transient: while the compile's threads release their memory,
# the main arena's first few 256 MiB blocks may still be fresh pages.
for _ in range(6):
  f(x, w).block_until_ready()
for _ in range(10):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_call(mode):
  result = subprocess.run([sys.executable, '-c', _PROGRAM, mode], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return [int(line) for line in result.stdout.split()]


@pytest.mark.slow
def test_kept_memory_stops_the_page_faults_of_each_call():
  pages = 65536 * 1024 * 4 // 4096
  assert all(faults >= pages // 2 for faults in _faults_per_call('default'))
  # Not every call: the kernel may reclaim idle pages of the kept heap between calls.
  kept = _faults_per_call('keep')
  assert sum(faults < pages // 100 for faults in kept) >= len(kept) // 2, kept


@pytest.mark.parametrize('where', ['no_libc', 'macos', 'musl', 'gpu_plugin', 'jax_platforms'])
def test_keeping_freed_memory_elsewhere_changes_nothing_and_says_why(where, monkeypatch, capsys):
  if where == 'no_libc':
    def missing(name):
      raise OSError(f'{name}: cannot open shared object file')
    monkeypatch.setattr(ctypes, 'CDLL', missing)
  elif where == 'macos':
    monkeypatch.setattr(sys, 'platform', 'darwin')
  elif where == 'musl':
    monkeypatch.setattr(platform, 'libc_ver', lambda: ('', ''))
  elif where == 'gpu_plugin':
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name: object() if name == 'jax_plugins' else None)
  else:
    monkeypatch.setenv('JAX_PLATFORMS', 'cuda,cpu')
  monkeypatch.setattr(jax.config, 'update', _must_not_be_called)
  assert host_memory.keep_freed_memory() is False
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and lines[0].startswith('keep_freed_memory: not kept, '), lines
  expected = {'no_libc': 'cannot be loaded', 'macos': 'not glibc (darwin', 'musl': 'not glibc',
              'gpu_plugin': 'accelerator', 'jax_platforms': 'accelerator'}[where]
  assert expected in lines[0]


def _must_not_be_called(*args):
  raise AssertionError(f'jax.config.update{args} called')
