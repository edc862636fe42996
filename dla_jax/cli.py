"""What every command line of dla_jax shares: the config flags and how a user's mistake ends.

- ``define_config_flag``: a ``--config`` flag (ml_collections' config file flag) that takes a
  config file's path or the name of a config shipped with the package (``shapes_tiny``,
  ``dla_r50_fpn_1x_coco``, ...), so commands work from any working directory. Every
  ``--config.FIELD=VALUE`` override must name an existing field; an unknown one is named, with
  the nearest existing field.
- ``run``: ``absl.app.run`` for the commands. A user's mistake (a bad flag, config value or
  data file: ``app.UsageError``, absl's flag errors and ``errors.UserError``) ends the process
  with one line on stderr and exit status 2, without a traceback. Any other exception is a bug
  and keeps its traceback.
"""

import difflib
import importlib.resources
import os
import re
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from dla_jax import errors

# Flag name -> packaged config used when the command line does not give that flag.
_DEFAULT_CONFIGS: dict[str, str] = {}


def packaged_configs() -> list[str]:
  """Names of the configs shipped with the package (``dla_jax.configs``), sorted."""
  files = importlib.resources.files('dla_jax.configs').iterdir()
  return sorted(f.name[:-3] for f in files if f.name.endswith('.py') and
                not f.name.startswith('_'))


def config_path(value: str) -> str:
  """The config file a ``--config`` value names: an existing file's path, else a packaged
  config's name, given bare (``shapes_tiny``), with ``.py``, or as the repository spells it
  (``configs/shapes_tiny.py``). A ``:argument`` suffix for ``get_config`` is kept.

  Raises:
    ConfigError: the value is neither an existing file nor a packaged config's name.
  """
  path, colon, argument = value.partition(':')
  expanded = os.path.expanduser(path)
  if os.path.isfile(expanded):
    return os.path.abspath(expanded) + colon + argument
  folder, name = os.path.split(path)
  name = name.removesuffix('.py')
  if folder in ('', 'configs') and name in packaged_configs():
    packaged = importlib.resources.files('dla_jax.configs') / f'{name}.py'
    return str(packaged) + colon + argument
  raise errors.ConfigError(f'{path}: no such config file, and not a packaged config (one of '
                           f'{", ".join(packaged_configs())})')


def field_paths(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Dotted paths of every field of ``config``, sections included ('optim', 'optim.base_lr')."""
  paths = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    paths.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      paths.extend(field_paths(value, path + '.'))
  return paths


def nearest_field(field: str, known: Sequence[str]) -> str | None:
  """The known field ``field`` most likely meant: in its own section, one whose name contains
  its name (or the reverse: 'lr' -> 'base_lr'), else the closest spelling; else the closest
  spelling anywhere."""
  section, _, name = field.rpartition('.')
  siblings = {k.rpartition('.')[2]: k for k in known if k.rpartition('.')[0] == section}
  containing = [c for c in siblings if name and (name in c or c in name)]
  if containing:
    return siblings[max(containing,
                        key=lambda c: difflib.SequenceMatcher(None, name, c).ratio())]
  close = difflib.get_close_matches(name, list(siblings), n=1, cutoff=0.5)
  if close:
    return siblings[close[0]]
  close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
  return close[0] if close else None


def check_overrides(config: ml_collections.ConfigDict, flag: str, argv: Sequence[str]) -> None:
  """Raises ConfigError naming the first ``--<flag>.FIELD`` of ``argv`` that ``config`` lacks,
  and the nearest field it has."""
  known = field_paths(config)
  for arg in argv:
    match = re.match(rf'-{{1,2}}(?:no)?{re.escape(flag)}\.([^=]+)', arg)
    if not match:
      continue
    field = re.sub(r'\[[^]]*\]', '', match.group(1))  # an item of a tuple field: its field
    if field not in known:
      nearest = nearest_field(field, known)
      hint = f'; did you mean --{flag}.{nearest}?' if nearest else ''
      raise errors.ConfigError(f'--{flag}.{field}: the config has no field {field!r}{hint}')


class _ConfigFileParser(flags.ArgumentParser):
  """ml_collections' config file parser (``inner``), taking packaged config names too and
  checking the overrides against the loaded config."""

  def __init__(self, name: str, inner: flags.ArgumentParser):
    self.name, self._inner = name, inner

  def parse(self, argument):
    config = self._inner.parse(config_path(argument))
    if isinstance(config, ml_collections.ConfigDict):
      check_overrides(config, self.name, sys.argv)
    return config

  def flag_type(self):
    return self._inner.flag_type()


def define_config_flag(name: str = 'config', default: str | None = None,
                       help_string: str = 'Experiment config: a file, or the name of a '
                       'packaged config (e.g. shapes_tiny).') -> flags.FlagHolder:
  """A locked ``--<name>`` config flag; ``default`` names a packaged config used when the
  command line does not give the flag (it takes effect in ``run``)."""
  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  flags.FLAGS[name].parser = _ConfigFileParser(name, flags.FLAGS[name].parser)
  if default:
    _DEFAULT_CONFIGS[name] = default
  return holder


def _program() -> str:
  """The command's name: 'dla_jax.main' for ``python -m dla_jax.main``."""
  spec = getattr(sys.modules['__main__'], '__spec__', None)
  return spec.name if spec else os.path.basename(sys.argv[0])


def _fail(message: str) -> None:
  print(f'{_program()}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the default configs filled in and errors on one line."""
  for name, default in _DEFAULT_CONFIGS.items():
    if not any(re.match(rf'-{{1,2}}{name}(=|$)', arg) for arg in argv):
      # ml_collections reads the overrides from sys.argv itself; they must follow the config.
      argv[1:1] = [f'--{name}={default}']
      if sys.argv is not argv:
        sys.argv[1:1] = [f'--{name}={default}']
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    # A config's mistake reaches absl as a ValueError, which it rewraps: report the original.
    _fail(str(e.__context__ if isinstance(e.__context__, errors.UserError) else e))
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # JAX's and orbax's INFO lines only on request
  return remaining


def run(main: Callable[[list[str]], None]) -> None:
  """``app.run(main)``, a user's mistake reported on one line of stderr with exit status 2."""

  def main_reporting_mistakes(argv):
    try:
      main(argv)
    except (errors.UserError, app.UsageError) as e:
      _fail(str(e))

  app.run(main_reporting_mistakes, flags_parser=_parse_flags)
