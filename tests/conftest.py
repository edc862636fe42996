"""Shared test settings: float32 matmuls/convs at full precision so that comparisons are exact."""

import jax

jax.config.update('jax_default_matmul_precision', 'highest')
