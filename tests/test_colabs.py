"""The Colab notebooks run top to bottom in their small setting (a cell that raises fails the
test) and are stored without outputs. The explorer inspects the suite's trained run."""

import json
import os

import nbformat
from nbclient import NotebookClient
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ('quickstart', 'assignment_explorer')


def _read(name):
  return nbformat.read(os.path.join(REPO, 'colabs', f'{name}.ipynb'), as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, short_run, tmp_path, monkeypatch, request):
  # The suite's short schedule on 8 shapes images: the quickstart trains the suite's program.
  monkeypatch.setenv('DLA_NOTEBOOK_SMALL', json.dumps(
      {**short_run, 'data.shapes_train_size': 8, 'data.shapes_val_size': 8}))
  if name == 'assignment_explorer':  # inspects a trained run (the quickstart trains its own)
    monkeypatch.setenv('DLA_CHECKPOINT_WORKDIR', request.getfixturevalue('trained_run')[1])
  monkeypatch.setenv('DLA_NOTEBOOK_WORKDIR', str(tmp_path / 'workdir'))
  monkeypatch.setenv('DLA_FIGURES_DIR', str(tmp_path / 'figures'))
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  notebook = _read(name)
  NotebookClient(notebook, timeout=900, kernel_name='python3',
                 resources={'metadata': {'path': REPO}}).execute()
  if name == 'assignment_explorer':
    assert sorted(os.listdir(tmp_path / 'figures')) == [
        'explorer_alphas.png', 'explorer_metrics.png', 'explorer_untrained.png']


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
  for cell in _read(name).cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, cell.source[:80]
