"""The fusion barrier: an exact identity that XLA:CPU computes once instead of in each consumer."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dla_jax.cpu import fusion_barrier
from dla_jax.models import resnet


@pytest.mark.parametrize('first', [0.0, 5.0, -3.0, np.nan, np.inf, -np.inf])
def test_barrier_returns_its_input_bit_for_bit_whatever_the_first_element(first):
  x = jax.random.normal(jax.random.key(0), (3, 5, 7)).at[0, 0, 0].set(first)
  one = jax.jit(fusion_barrier.runtime_one)(x)
  assert one.shape == () and one.dtype == x.dtype and float(one) == 1.0
  y = jax.jit(fusion_barrier.barrier)(x, one)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_runtime_one_carries_no_gradient():
  grad = jax.grad(lambda x: fusion_barrier.barrier(x, fusion_barrier.runtime_one(x)).sum())(
      jnp.full((4,), 2.0))
  np.testing.assert_array_equal(np.asarray(grad), np.ones(4))


def _largest_loop_fusion_reads(fn, *args, shape: str) -> int:
  """The most operands of ``shape`` (HLO text, e.g. 'f32[512,64]') that one loop fusion of the
  compiled ``fn`` reads."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  entry = text[text.index('ENTRY'):]
  shapes = dict(re.findall(r'%([\w.\-]+) = (\w+\[[\d,]*\])', entry))
  most = 0
  for operands in re.findall(r'= \S+ fusion\((.*?)\), kind=kLoop', entry):
    names = re.findall(r'%([\w.\-]+)', operands)
    most = max(most, sum(shapes.get(name) == shape for name in names))
  return most


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='pins XLA:CPU fusion')
def test_barrier_stops_xla_cpu_recomputing_a_residual_chain():
  # A stage of 6 residual blocks: each block's output feeds the next block's matmul and its
  # residual add. Behind a barrier, every add reads just its block's matmul output and the
  # shortcut, not the whole chain before it.
  def stage(x, weights, barrier):
    one = fusion_barrier.runtime_one(x)
    for w in weights:
      y = jnp.maximum(x @ w + x, 0)
      x = fusion_barrier.barrier(y, one) if barrier else y
    return x

  x = jnp.ones((512, 64))
  weights = [jnp.full((64, 64), 0.01)] * 6
  reads = _largest_loop_fusion_reads(lambda x, w: stage(x, w, True), x, weights,
                                     shape='f32[512,64]')
  assert reads <= 2
  unbarred = _largest_loop_fusion_reads(lambda x, w: stage(x, w, False), x, weights,
                                        shape='f32[512,64]')
  # What the barrier is for; should XLA stop recomputing by itself, the barrier can go.
  assert unbarred > 2


@pytest.mark.slow
def test_resnet_output_unchanged_by_fusion_barriers():
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  plain = resnet.ResNet('resnet50', width=8)
  barred = resnet.ResNet('resnet50', width=8, block_output=fusion_barrier.block_output)
  variables = plain.init(jax.random.key(0), images)
  want = jax.jit(plain.apply)(variables, images)
  got = jax.jit(barred.apply)(variables, images)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
