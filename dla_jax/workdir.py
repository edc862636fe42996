"""A run's folders, on a local disk or in a bucket (``gs://bucket/runs/r50``).

Every file a run writes (checkpoints, metrics, detections, classes, exports) goes through
``etils.epath``, the file API orbax itself uses, so a ``gs://`` workdir works like a local one:
orbax and tensorstore write checkpoints there natively, and epath writes the rest (TensorBoard
events included) through TensorFlow's file system where TensorFlow is installed, else through
gcsfs.

``check_writable`` runs before anything is built or trained: a bucket the run cannot write to,
or a missing library, is reported at once rather than at the first checkpoint.
"""

import importlib.util
import json
import os
import uuid
from typing import Any

from etils import epath

from dla_jax import errors

GCS_INSTALL = "pip install -e '.[gcs]'"


def is_remote(path: str) -> bool:
  """Whether ``path`` is a URL (``gs://...``) rather than a local path."""
  return '://' in str(path)


def path(folder: str) -> epath.Path:
  """``folder`` as an epath: a local one absolute (``~`` expanded), a URL as it is."""
  if is_remote(folder):
    return epath.Path(folder)
  return epath.Path(os.path.abspath(os.path.expanduser(folder)))


def _missing_libraries(folder: str) -> list[str]:
  """The Python packages that writing to ``folder`` needs but are not installed."""
  if not str(folder).startswith('gs://'):
    return []
  missing = []
  if not any(importlib.util.find_spec(m) for m in ('gcsfs', 'tensorflow')):
    missing.append('gcsfs')  # epath's gs:// without TensorFlow
  try:
    storage = importlib.util.find_spec('google.cloud.storage')
  except ModuleNotFoundError:
    storage = None
  if storage is None:
    missing.append('google-cloud-storage')  # orbax's gs:// deletions
  return missing


def check_writable(folder: str, flag: str = '--workdir') -> None:
  """Creates ``folder`` if needed and writes and deletes a small file there.

  Raises:
    FlagError: naming ``flag`` and the folder, when a library that the folder's file system
      needs is missing (with the install line) or the folder cannot be written.
  """
  missing = _missing_libraries(folder)
  if missing:
    raise errors.FlagError(f'{flag} {folder}: writing there needs {", ".join(missing)}: '
                           f'{GCS_INSTALL}')
  probe = path(folder) / f'.write_test_{uuid.uuid4().hex}'
  try:
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text('')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  (each file system raises its own)
    raise errors.FlagError(f'{flag} {folder}: cannot write there: {type(e).__name__}: {e}'
                           ) from e


def write_json(file: epath.Path, value: Any, indent: int | None = None) -> None:
  """Writes ``value`` as json to ``file`` under a temporary name, then renames it, so that a
  reader never sees a half-written file (on a local disk; a bucket's objects appear whole)."""
  tmp = file.parent / f'{file.name}.tmp'
  tmp.write_text(json.dumps(value, indent=indent))
  tmp.replace(file)
