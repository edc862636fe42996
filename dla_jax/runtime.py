"""Where a run computes, said before it starts: the start-up line, the accelerator check and the
persistent compilation cache.

A COCO run on the CPU would take months and look like a slow start, so the COCO configs set
``train.require_accelerator``: a run whose JAX backend is the CPU then stops at once, with the
install line of the accelerator build of JAX. The shapes configs leave it off.
"""

import collections
import importlib.util
import os

import jax
import ml_collections

from dla_jax import cpu
from dla_jax import errors
from dla_jax import workdir as workdir_lib
from dla_jax.models import detector

INSTALL_LINES = ("pip install -e '.[cuda12]' on NVIDIA GPU hosts, "
                 "pip install -e '.[tpu]' on Cloud TPU VMs")


def startup_line(config: ml_collections.ConfigDict, config_file: str | None = None) -> str:
  """One line naming what this run computes on and with: backend, devices, processes, batch
  per device, compute dtype, convolutions (and the config file, when given)."""
  devices = jax.devices()
  kinds = ', '.join(f'{n} x {kind}' for kind, n in
                    collections.Counter(d.device_kind for d in devices).items())
  per_device = config.train.global_batch / len(devices)
  line = (f'backend {jax.default_backend()} | devices: {kinds} | '
          f'{jax.process_count()} process{"es" if jax.process_count() > 1 else ""} | '
          f'global batch {config.train.global_batch}, {per_device:g} per device | '
          f'compute {detector.compute_dtype_name(config)} | conv {cpu.describe(config.model)}')
  return line + (f' | config {config_file}' if config_file else '')


def require_accelerator(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError when ``train.require_accelerator`` is set and the backend is the CPU,
  naming the install line of JAX's accelerator build."""
  if not config.train.require_accelerator or jax.default_backend() != 'cpu':
    return
  if any(importlib.util.find_spec(m) for m in ('jax_plugins', 'libtpu')):
    why = ('a JAX accelerator plugin is installed but found no usable device (see the '
           'warnings above; check the driver with nvidia-smi)')
  else:
    why = 'JAX is the CPU-only build'
  raise errors.ConfigError(
      f'train.require_accelerator: this run would compute on the CPU: {why}. Install JAX for '
      f'the accelerator ({INSTALL_LINES}), or set --config.train.require_accelerator=false to '
      'run on the CPU anyway')


def enable_compilation_cache(config: ml_collections.ConfigDict, workdir: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache (``train.compilation_cache``), before anything
  compiles: compiled programs are kept in a folder, and a resumed or repeated run loads them
  instead of compiling again.

  The folder is ``train.compilation_cache_dir`` when set, else ``$JAX_COMPILATION_CACHE_DIR``
  when set (one cache for many runs: a sweep's, a test session's), else
  ``<workdir>/compilation_cache``.

  Returns:
    The cache folder, or None when the cache is off or there is no folder to use.
  """
  if not config.train.compilation_cache:
    return None
  folder = config.train.compilation_cache_dir or os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
  if not folder and workdir:
    folder = str(workdir_lib.path(workdir) / 'compilation_cache')
  if folder:
    jax.config.update('jax_compilation_cache_dir', folder)
  return folder or None
