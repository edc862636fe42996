"""The sweep runner and its summary work end to end on a two-run micro-sweep, and a rerun
skips what is finished."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_micro_sweep_runs_summarizes_and_resumes(few_images, tmp_path):
  images, annotations = few_images
  sweep_file = tmp_path / 'micro.py'
  sweep_file.write_text('def get_sweep():\n'
                        "  return {'dla': ['--config.assigner.name=dla'],\n"
                        "          'atss': ['--config.assigner.name=atss']}\n")
  data = ['--config.data.source=coco_json', f'--config.data.train_images={images}',
          f'--config.data.val_images={images}', f'--config.data.train_annotations={annotations}',
          f'--config.data.val_annotations={annotations}', '--config.train.global_batch=8',
          '--config.train.eval_batch=8', '--config.optim.epochs=2',
          '--config.train.eval_every_epochs=1', '--config.train.log_every=1']
  out = tmp_path / 'sweep'
  sweep = ['launch/sweep.py', '--config', 'configs/shapes_tiny.py', '--sweep', str(sweep_file),
           '--seeds', '3', '--out', str(out), '--', *data]
  first = _run(*sweep)
  assert 'dla seed 3: ' in first and 'atss seed 3: ' in first
  for name in ('dla', 'atss'):
    assert os.path.exists(out / name / 'seed_3' / 'metrics.jsonl')

  summary = _run('launch/summarize_sweep.py', str(out), '--plot', str(tmp_path / 'ap.png'))
  for name in ('dla', 'atss'):
    assert re.search(rf'^\| {name} \| 3 \(n=1\) \| \d\.\d{{3}} \| \d\.\d{{3}} \| \d\.\d{{3}} \|$',
                     summary, flags=re.M), summary
  assert os.path.getsize(tmp_path / 'ap.png') > 0

  again = _run(*sweep)
  assert again.count('finished, skipped') == 2, again
