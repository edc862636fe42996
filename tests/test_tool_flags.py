"""Importing a tool module defines only the flags its own source defines: a tool that imports
another's functions gets none of that tool's flags. Each tool is imported in a fresh process."""

import ast
import inspect
import json
import pathlib
import subprocess
import sys

import pytest

from dla_jax import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
TOOLS = sorted(p.stem for p in (REPO / 'dla_jax' / 'tools').glob('*.py')
               if p.name != '__init__.py')
CONFIG_FLAG = inspect.signature(cli.define_config_flag).parameters['name'].default
_DEFINED_BY_DLA_JAX = (
    'import importlib, json, sys\n'
    'from absl import flags\n'
    'importlib.import_module(sys.argv[1])\n'
    'print(json.dumps(sorted(f.name for module, defined in flags.FLAGS.flags_by_module_dict()'
    '.items() if module.startswith("dla_jax") for f in defined)))\n')


def _flags_in_source(tool: str) -> set[str]:
  """Names of the flags the tool's source defines: ``flags.DEFINE_*(name, ...)`` and
  ``cli.define_config_flag(name, ...)`` calls (``config`` when unnamed), wherever they are."""
  names = set()
  for node in ast.walk(ast.parse((REPO / 'dla_jax' / 'tools' / f'{tool}.py').read_text())):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
      continue
    named = node.args and isinstance(node.args[0], ast.Constant)
    if node.func.attr.startswith('DEFINE') and named:
      names.add(node.args[0].value)
    elif node.func.attr == 'define_config_flag':
      names.add(node.args[0].value if named else CONFIG_FLAG)
  return names


def test_the_source_reading_finds_a_tools_flags():
  assert {'config', 'image_size', 'batch', 'json', 'fcos_variant'} <= _flags_in_source(
      'benchmark')
  assert {'coco_config', 'batches', 'workers'} <= _flags_in_source('bench_input')
  assert _flags_in_source('summary') == {'config'}


@pytest.mark.slow
@pytest.mark.parametrize('tool', TOOLS)
def test_importing_a_tool_defines_only_its_own_flags(tool):
  result = subprocess.run([sys.executable, '-c', _DEFINED_BY_DLA_JAX, f'dla_jax.tools.{tool}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  defined = set(json.loads(result.stdout.splitlines()[-1]))
  assert defined <= _flags_in_source(tool), sorted(defined - _flags_in_source(tool))
