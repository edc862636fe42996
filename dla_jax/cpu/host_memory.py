"""Host memory reuse: the memory XLA:CPU frees after a call kept for the next one.

XLA:CPU allocates a compiled program's temporaries with malloc in every call and frees them
after it. glibc serves blocks that large with mmap and unmaps them on free. So each call faults
in fresh pages, which the kernel zeroes first: for R50-FPN, a measurable part of every call
(docs/performance.md#what-each-change-bought).

``keep_freed_memory`` stops it in two steps:

- glibc is told never to mmap a block and never to give the top of its heap back (mallopt's
  M_MMAP_MAX = 0 and M_TRIM_THRESHOLD = SIZE_MAX). That holds for glibc's main arena only:
  the arenas of other threads still map large blocks, whatever M_MMAP_MAX says, when their
  64 MiB heaps cannot hold them.
- JAX runs single-device CPU programs inline, in the calling thread, instead of handing them
  to a worker thread (``jax_cpu_enable_async_dispatch`` off). Called from the main thread, the
  program's temporaries then come from the main arena, which keeps and reuses them.

With both, an inference call faults in nothing and a train step a small fraction of those
pages, and compiles take as long as without the setting
(docs/performance.md#what-each-change-bought). Putting every thread on the main arena
(M_ARENA_MAX = 1) stops the faults as well, but XLA's multi-threaded compiles then contend for
that one arena and take longer
(docs/performance.md#cpu-development-machine-2-cores-xeon-x86_64-avx-512-jax-0102-torch-2141-float32--2026-11-28-second-round-of-changes).

The price: the process keeps its peak heap until it exits, and the Python thread waits for each
CPU call (the input pipeline loads in its own threads, so training loses no overlap). Only
single-device CPU programs called from the main thread gain; multi-device CPU programs still
run on worker threads. On GPU and TPU device memory is not malloc's, so it buys nothing there
and would only pin the host process at its peak heap: ``keep_freed_memory`` acts only on Linux
with glibc when JAX computes on the CPU, and says in one line why it did nothing elsewhere.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys

import jax

# mallopt's parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _accelerator_possible() -> bool:
  """Whether JAX may compute on something other than the CPU, decided without starting its
  backends (the dispatch setting below must precede them): JAX_PLATFORMS names another
  platform first, or an accelerator plugin (CUDA, ROCm, TPU) is installed."""
  platforms = jax.config.jax_platforms or os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() != 'cpu'
  return bool(importlib.metadata.entry_points(group='jax_plugins')) or any(
      importlib.util.find_spec(m) is not None for m in ('jax_plugins', 'libtpu'))


def _why_not() -> str | None:
  """Why keeping freed memory does not apply here, or None when it does."""
  if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
    return f'the C library is not glibc ({sys.platform}, {platform.libc_ver()[0] or "unknown"})'
  if _accelerator_possible():
    return 'JAX may compute on an accelerator, where device memory is not malloc\'s'
  return None


def keep_freed_memory() -> bool:
  """Has the main thread's CPU calls reuse freed memory: no mmap, no trimming, inline dispatch.

  Acts only on Linux with glibc when JAX will compute on the CPU; elsewhere, or when glibc
  refuses a setting, it prints one line saying why and changes nothing. Never raises. Call it
  before JAX starts its backend (before the first computation or device query), and make the
  calls that should gain from the main thread. Process-wide and irreversible.

  Returns:
    Whether the settings were made.
  """
  why = _why_not()
  if why is None:
    try:
      mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError) as e:
      why = f'glibc\'s mallopt cannot be loaded ({e})'
  if why is None:
    # A trim threshold of -1 is SIZE_MAX to glibc: the top of the heap is never given back.
    for name, parameter, value in (('M_MMAP_MAX', _M_MMAP_MAX, 0),
                                   ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, -1)):
      if mallopt(parameter, value) != 1:
        why = f'mallopt refused {name} = {value}'
        break
  if why is not None:
    print(f'keep_freed_memory: not kept, {why}', flush=True)
    return False
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True
