"""Folders built once and reused: written under a temporary name, then renamed into place.

A crashed or interrupted build leaves only a temporary folder, never a half dataset under the
final name; concurrent builders (several processes on one host) each build and the first rename
wins.
"""

import os
import pathlib
import shutil
import tempfile
from typing import Callable


def default_root(cache_dir: str) -> pathlib.Path:
  """``cache_dir`` (``data.cache_dir``), or ``~/.cache/dla_jax`` when it is empty."""
  return pathlib.Path(cache_dir or '~/.cache/dla_jax').expanduser()


def build_once(path: pathlib.Path, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Returns ``path``, first calling ``build(tmp)`` to fill it if it does not exist yet."""
  if path.is_dir():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))
  try:
    build(tmp)
    os.rename(tmp, path)
  except OSError:
    if not path.is_dir():  # not a lost race with another builder
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path
