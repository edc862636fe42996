"""Host memory reuse: glibc told to keep the memory a program frees instead of unmapping it.

XLA:CPU allocates a compiled program's temporaries with malloc in every call and frees them
after it. glibc serves blocks that large with mmap and unmaps them on free. So each call faults
in fresh pages, which the kernel zeroes first. On the 2-core development machine (R50-FPN at
512 x 512, batch 2, float32, 2026-11-28):

- an inference call faulted 80,000 pages (313 MiB) and spent 0.11 s of CPU in the kernel;
- a train step faulted 347,000 pages (1.36 GiB) and spent 0.53 s there.

After ``keep_freed_memory`` most calls fault nothing after the first (a kernel that reclaims
idle pages can still take some of the kept heap back between calls). Inference took 628-641
against 664-755 ms, and the train step 1898-1952 against 1932-2142 ms (alternating runs).

The price:

- Every thread shares one malloc arena. Only glibc's main arena reuses large blocks without
  mmap. That slows XLA's multi-threaded compiles by about a third: the train step took 21.2
  against 15.7 s, and inference 8.9 against 6.1 s.
- The process keeps its peak memory until it exits.

The entry points take it as ``--keep_freed_memory``. On GPU and TPU, device memory is not
malloc's, so it buys nothing there.
"""

import ctypes

# mallopt's parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_memory() -> None:
  """Has glibc keep freed memory for reuse: one arena, no mmap, and the heap never trimmed.

  Call it before JAX starts its backend, that is before the first computation or device query.
  Threads that have allocated already keep their own arenas, and those still unmap large
  blocks. Process-wide and irreversible.

  Raises:
    RuntimeError: the C library has no ``mallopt`` (not glibc) or refused a setting.
  """
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError) as e:
    raise RuntimeError(f'keep_freed_memory needs glibc\'s mallopt: {e}') from e
  # A trim threshold of -1 is SIZE_MAX to glibc: the top of the heap is never given back.
  for name, parameter, value in (('M_ARENA_MAX', _M_ARENA_MAX, 1), ('M_MMAP_MAX', _M_MMAP_MAX, 0),
                                 ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, -1)):
    if mallopt(parameter, value) != 1:
      raise RuntimeError(f'mallopt refused {name} = {value}')
