"""Speed work for XLA:CPU alone, behind one door: the rest of the package is plain JAX and Flax
and computes the same graph on every platform.

XLA:CPU computes some convolution gradients several times slower than its matmuls, recomputes
element-wise chains in every consumer, and faults in fresh pages for each call's temporaries.
This package works around the three, and only on the CPU:

- ``conv.py`` and ``winograd.py``: 1x1 convolutions as matmuls, Winograd F(4x4, 3x3) for 3x3
  stride-1 ones, matmul kernel gradients for other wide ones (``model.conv_impl``);
- ``fusion_barrier.py``: each ResNet block's output read from memory by its consumers instead of
  recomputed;
- ``host_memory.py``: the memory XLA:CPU frees kept for its next call (``--keep_freed_memory``).

What each buys: docs/performance.md#the-cpu-only-code-dla_jaxcpu. Two calls decide everything:
``model_options(model_config, backend)`` says how the detector's modules compute, and
``keep_freed_memory()`` prepares the process before JAX starts its backend. On GPU and TPU,
and on the CPU with ``model.conv_impl='xla'``, the detector is built without any of it: XLA's
convolutions and no fusion barriers, the exact graph that accelerators run.
"""

import dataclasses
import functools
from typing import Callable

import jax
import ml_collections

from dla_jax.cpu import conv
from dla_jax.cpu import fusion_barrier
from dla_jax.cpu import host_memory

CONV_IMPLS = conv.CONV_IMPLS
keep_freed_memory = host_memory.keep_freed_memory


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """How the detector's modules compute; the defaults are the graph GPU and TPU run.

  Attributes:
    conv: ``nn.Conv``'s ``conv_general_dilated``; None for ``lax``'s own.
    block_output: given the ResNet stem's output, the function applied to each residual block's
      output; None for none.
  """
  conv: Callable | None = None
  block_output: Callable | None = None


def model_options(model_config: ml_collections.ConfigDict,
                  backend: str | None = None) -> ModelOptions:
  """The options of ``model_config`` (its ``conv_impl``) on ``backend`` ('cpu', 'gpu' or 'tpu';
  default JAX's own): on the CPU, unless ``conv_impl`` is 'xla', ``conv_impl``'s convolutions
  and a fusion barrier after every ResNet block; elsewhere none."""
  if (backend or jax.default_backend()) != 'cpu' or model_config.conv_impl == 'xla':
    return ModelOptions()
  return ModelOptions(conv=functools.partial(conv.conv_general_dilated,
                                             impl=model_config.conv_impl),
                      block_output=fusion_barrier.block_output)


def describe(model_config: ml_collections.ConfigDict, backend: str | None = None) -> str:
  """``model.conv_impl`` and what ``model_options`` made of it, for the start-up line."""
  impl = model_config.conv_impl
  if model_options(model_config, backend) == ModelOptions():
    return f"{impl} (XLA's own)"
  if impl == 'auto':
    return 'auto (XLA:CPU: Winograd and matmuls where they pay, fusion barriers)'
  return f'{impl} (XLA:CPU, fusion barriers)'

