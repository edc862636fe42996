"""Shared test settings.

Eight simulated CPU devices (set before JAX starts) so that sharded steps run on a real mesh;
single-device code is unaffected. float32 matmuls and convs at full precision so that
comparisons are exact. A compilation cache shared by the session's tests: XLA's CPU compiles
dominate the suite's time and many tests compile the same tiny programs.
"""

import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_default_matmul_precision', 'highest')
jax.config.update('jax_compilation_cache_dir',
                  os.path.join(tempfile.gettempdir(), 'dla_jax_test_compilation_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
