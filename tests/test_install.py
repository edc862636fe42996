"""What the install declares matches what the code needs: every subpackage is installed, the
main job's dependencies pull neither torch nor TensorFlow and the code imports without them, and
launch/constraints.txt holds the versions the tests run with; the README's layout matches the
tree, and modules keep to their concerns."""

import ast
import collections
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())


def test_every_subpackage_is_installed():
  found = {'.'.join(p.relative_to(REPO).parent.parts)
           for p in (REPO / 'dla_jax').rglob('__init__.py')}
  declared = set(PYPROJECT['tool']['setuptools']['packages'])
  assert found | {'dla_jax.configs'} == declared


@pytest.mark.slow
def test_the_main_job_needs_neither_torch_nor_tensorflow():
  names = {re.split(r'[<>=\[ ]', d)[0] for d in PYPROJECT['project']['dependencies']}
  assert not names & {'torch', 'torchvision', 'tensorflow', 'tensorflow-cpu',
                      'tensorflow-datasets'}, names
  # Every module imports with those libraries unimportable; each command defines its flags,
  # so each is imported in a process of its own, after the library.
  modules = sorted('.'.join(p.relative_to(REPO).with_suffix('').parts)
                   for p in (REPO / 'dla_jax').rglob('*.py') if p.name != '__init__.py')
  commands = ['dla_jax.main', 'dla_jax.tools.accelerator_suite', 'dla_jax.tools.bench_input',
              'dla_jax.tools.benchmark', 'dla_jax.tools.summary']
  library = [m for m in modules if m not in commands]
  for group in [library, *([c] for c in commands)]:
    program = ('import importlib, sys\n'
               'for name in ("torch", "torchvision", "tensorflow", "tensorflow_datasets"):\n'
               '  sys.modules[name] = None\n'
               f'for module in {group!r}:\n'
               '  importlib.import_module(module)\n')
    result = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_constraints_are_the_versions_installed_here():
  lines = (REPO / 'launch' / 'constraints.txt').read_text().splitlines()
  pinned = dict(line.split('==') for line in lines if line and not line.startswith('#'))
  installed = {name: importlib.metadata.version(name) for name in pinned}
  assert installed == pinned
  assert {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'} <= set(pinned)


def test_the_test_command_installs_through_the_constraints():
  ci = (REPO / '.ci' / 'run').read_text()
  readme = (REPO / 'README.md').read_text()
  install = "-c launch/constraints.txt -e '.[test,torch,tfds]'"
  assert install in ci and f'pip install {install}' in readme
  assert os.access(REPO / '.ci' / 'run', os.X_OK)


def test_ci_runs_every_readme_command_from_the_main_jobs_install_before_the_extras():
  ci = (REPO / '.ci' / 'run').read_text().splitlines()
  readme = (REPO / 'README.md').read_text()
  commands = (REPO / '.ci' / 'documented_commands').read_text()
  base = '-c launch/constraints.txt -e .'
  assert f'pip install {base} && ' in readme

  def line(text):
    return next(i for i, l in enumerate(ci) if l.endswith(text))

  assert line(base) < line('.ci/documented_commands .venv/bin/python') < line("tfds]'")
  table = readme[readme.index('## Modes'):readme.index('## Export and deploy')]
  shown = (set(re.findall(r'^\| `([a-z_]+)`', table, re.M)) |
           set(re.findall(r'--mode ([a-z_]+)', readme)))
  assert {'train', 'evaluate', 'predict', 'export'} <= shown, shown
  run = set(re.findall(r'--mode (\w+)', commands)) | {'train_and_evaluate'}
  assert shown <= run, shown - run
  for command in ('--format stablehlo', 'dla_jax.tools.summary', 'serving.load('):
    assert command in readme and command in commands, command
  assert os.access(REPO / '.ci' / 'documented_commands', os.X_OK)


_FILE_TOKEN = re.compile(r'[\w.-]+(?:/[\w.-]+)*(?:\.(?:py|sh|ipynb|md|txt|toml)\b|/(?![\w.]))')


def layout_entries(readme: str) -> dict[str, str]:
  """{path: description} of the README's Layout block: a row starts with a path at the left
  margin (a folder ends with '/'); indented lines continue the row above."""
  block = readme.split('## Layout', 1)[1].split('```')[1]
  entries, path = {}, None
  for line in block.strip('\n').splitlines():
    if line[:1].strip():
      path, _, description = line.partition(' ')
      entries[path] = description.strip()
    elif path:
      entries[path] += ' ' + line.strip()
  return entries


def layout_problems(readme: str, root: pathlib.Path) -> list[str]:
  """What the README's Layout block gets wrong about the tree under ``root``.

  Every row's path must exist (a folder as a folder), and so must every file or folder its
  description names by a path with a suffix (``serving.py``, ``sweeps/``), looked up in the
  row's folder or the one above it. Every module under ``dla_jax/`` but ``__init__.py`` must be
  listed: as a row of its own, or named in the description of a row in its folder (a folder's
  row may name it without '.py').
  """
  entries = layout_entries(readme)
  problems = []
  names = collections.defaultdict(set)  # folder -> the module names its rows give
  for path, description in entries.items():
    target = root / path
    if not (target.is_dir() if path.endswith('/') else target.is_file()):
      problems.append(f'{path}: listed in the README layout, not in the tree')
      continue
    folder = target if path.endswith('/') else target.parent
    files = _FILE_TOKEN.findall(description)
    for name in files:
      if not any((base / name).exists() for base in (folder, folder.parent)):
        problems.append(f'{path}: its description names {name}, not in the tree')
    names[folder] |= set(files)
    if path.endswith('/'):
      names[folder] |= {f'{word}.py' for word in re.findall(r'\w+', description)}
    else:
      names[folder].add(target.name)
  for module in sorted((root / 'dla_jax').rglob('*.py')):
    if module.name != '__init__.py' and module.name not in names[module.parent]:
      problems.append(f'{module.relative_to(root).as_posix()}: in the tree, not listed in the '
                      'README layout')
  return problems


def test_readme_layout_lists_every_module_and_only_paths_that_exist():
  assert layout_problems((REPO / 'README.md').read_text(), REPO) == []


def test_layout_check_reports_each_disagreement_of_readme_and_tree(tmp_path):
  readme = (REPO / 'README.md').read_text()
  for top in {path.split('/')[0] for path in layout_entries(readme)}:
    for path in (REPO / top).rglob('*'):
      if path.is_file() and '__pycache__' not in path.parts:
        (tmp_path / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.relative_to(REPO)).touch()
  assert layout_problems(readme, tmp_path) == []
  (tmp_path / 'dla_jax' / 'train.py').unlink()
  (tmp_path / 'dla_jax' / 'models' / 'fpn.py').unlink()
  (tmp_path / 'dla_jax' / 'data' / 'mosaic.py').touch()
  # step.py's row renamed: 'step' stays a word of the layout ('step decay'), but no row lists it.
  edited = readme.replace('dla_jax/step.py ', 'dla_jax/steps.py ').replace('; prefetch', '')
  assert layout_problems(edited, tmp_path) == [
      'dla_jax/train.py: listed in the README layout, not in the tree',
      'dla_jax/steps.py: listed in the README layout, not in the tree',
      'dla_jax/models/: its description names fpn.py, not in the tree',
      'dla_jax/data/mosaic.py: in the tree, not listed in the README layout',
      'dla_jax/data/prefetch.py: in the tree, not listed in the README layout',
      'dla_jax/step.py: in the tree, not listed in the README layout']


def _imports(module: str) -> set[str]:
  """The dla_jax modules that ``dla_jax/<module>.py`` imports."""
  tree = ast.parse((REPO / 'dla_jax' / f'{module}.py').read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('dla_jax'):
      names |= {f'{node.module}.{alias.name}' for alias in node.names}
    elif isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names if alias.name.startswith('dla_jax')}
  return names


@pytest.mark.parametrize('module, kept_out', [
    ('export_params', ('dla_jax.train',)),
    ('step', ('dla_jax.data',)),
    ('optim', ('dla_jax.models',)),
    ('models/detector', ('dla_jax.cpu.conv', 'dla_jax.cpu.fusion_barrier')),
    ('models/resnet', ('dla_jax.cpu',)),
    ('evaluation', ('dla_jax.train',)),
])
def test_each_module_keeps_to_its_concern(module, kept_out):
  imported = _imports(module)
  assert not [name for name in imported if name.startswith(kept_out)], imported


def test_the_train_module_holds_the_loop_and_no_other_concern():
  tree = ast.parse((REPO / 'dla_jax' / 'train.py').read_text())
  defined = {node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
  assert defined & {'evaluate', 'EvalSteps', 'restore_weights', 'weights_template',
                    'write_classes', 'read_classes', 'check_config'} == set()
  assert {'train', 'train_and_evaluate'} <= defined
