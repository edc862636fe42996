"""An exact identity that XLA:CPU's fusion does not copy into the consumers of its result.

XLA:CPU fuses a cheap element-wise producer into each of its consumers, even where its result
is written out anyway for another consumer that cannot fuse it (a matmul). In a ResNet stage,
each block's output relu(bn3(conv3) + shortcut) feeds the next block's conv1 (a matmul, which
reads it from memory) and the next block's residual add (a loop fusion, which XLA gives its
own copy of the element-wise ops). The copy recomputes the shortcut, which is the block before's
output, and so on back: without a barrier, block k's add reads the conv3 outputs of every block
before it in the stage, up to 7 arrays where 2 would do (R50 at 512 x 512).

XLA's fusion does not duplicate 'expensive' ops, and a floating-point division is one. So
``barrier(x, one)`` is ``x / one``: exact, since ``one`` is exactly 1, and read from memory by
every consumer. ``one`` must be unknown when XLA compiles, else the division by a constant 1 is
simplified away: ``runtime_one`` makes it from an input array.

A barrier after every backbone block makes R50-FPN inference on XLA:CPU faster and leaves the
train step as fast as without (docs/performance.md#what-each-change-bought); barriers after the
head's tower layers buy nothing (docs/performance.md#tried-in-that-round-and-dropped).
``block_output`` is what ``dla_jax.cpu.model_options`` gives the ResNet on the CPU only:
XLA:GPU's fusion is another pass, not yet measured on a GPU.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def runtime_one(x: jax.Array) -> jax.Array:
  """A scalar 1 of ``x``'s dtype that XLA cannot fold: computed from ``x``'s first element.

  It is 1 whatever that element holds (NaN and infinities included), and carries no gradient.
  The square root (of 1: exact) is 'expensive' too, so XLA computes it once instead of slicing
  ``x`` in each barrier, which would keep ``x`` alive until the last one.
  """
  first = lax.stop_gradient(x.reshape(-1)[0])
  return lax.sqrt(1 + jnp.isnan(first).astype(x.dtype) * 0)


def barrier(x: jax.Array, one: jax.Array) -> jax.Array:
  """``x``, unchanged, computed once and read by each of its consumers (see the module doc).

  x: any shape; one: a scalar from ``runtime_one``, of x's dtype.
  """
  return x / one


def block_output(stem_output: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """The function ``ResNet`` applies to each block's output: a ``barrier`` whose 1 is made once,
  from the stem's output [B, H, W, C]."""
  one = runtime_one(stem_output)
  return lambda x: barrier(x, one)
