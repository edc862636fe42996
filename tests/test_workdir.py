"""A run's folders on a local disk or in a bucket: a ``gs://`` workdir trains, evaluates,
resumes and exports like a local one; a workdir that cannot be written, or a bucket without the
libraries that write to it, is named before anything is built.

The bucket is a stand-in: a local folder behind the ``gs`` protocol of fsspec (what epath uses
for ``gs://`` without TensorFlow) and tensorstore's file driver in place of its GCS driver (what
orbax writes arrays with). Everything above those two, dla_jax's file handling and orbax's
included, runs as it would on GCS.
"""

import json
import os

from etils.epath import backend as epath_backend
from etils.epath import gpath
import fsspec
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
import importlib.util
from orbax.checkpoint._src.path import gcs_utils
import pytest

from dla_jax import errors
from dla_jax import export_params
from dla_jax import metric_writer
from dla_jax import train
from dla_jax import workdir as workdir_lib


@pytest.fixture(name='bucket')
def _bucket(tmp_path, monkeypatch):
  """The local folder that ``gs://`` paths land in, for the duration of a test."""
  root = tmp_path / 'gcs'

  class FakeGcs(DirFileSystem):
    protocol = ('gs', 'gcs')

    def __init__(self, *args, **kwargs):
      del args, kwargs  # gcsfs's options
      super().__init__(path=str(root), fs=LocalFileSystem(auto_mkdir=True))

  def file_kvstore(path):
    bucket, relative = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {'driver': 'file', 'path': str(root / bucket / relative)}

  for protocol in FakeGcs.protocol:
    fsspec.register_implementation(protocol, FakeGcs, clobber=True)
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  monkeypatch.setattr(gcs_utils, 'get_kvstore_for_gcs', file_kvstore)
  monkeypatch.setattr(gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False)
  monkeypatch.setattr(workdir_lib, '_missing_libraries', lambda folder: [])
  yield root
  epath_backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.mark.slow
def test_a_bucket_workdir_trains_resumes_evaluates_and_exports(few_images_config, bucket):
  run = 'gs://runs/r1'
  config = few_images_config(stop_at_step=2)
  config.train.checkpoint_every = 1
  train.train(config, run)
  local = bucket / 'runs' / 'r1'
  assert sorted(os.listdir(local / 'checkpoints')) == ['1', '2']
  assert os.listdir(local / 'tensorboard')

  config.train.stop_at_step = 0  # the same run to its end: it resumes from step 2
  metrics = train.train_and_evaluate(config, run)
  rows = metric_writer.read_metrics(run)
  assert [(r['split'], r['step']) for r in rows] == [
      *(('train', s) for s in range(1, 13)), ('val', 12)]
  assert sorted(os.listdir(local / 'checkpoints')) == ['10', '11', '12']
  assert json.loads((local / train.FINAL_METRICS).read_text()) == {
      'step': 12, 'split': 'val', **metrics}
  names = json.loads((local / 'classes.json').read_text())['names']
  assert len(names) == config.data.num_classes
  assert isinstance(json.loads((local / 'detections_val_step12.json').read_text()), list)

  export_params.export(config, run, 'gs://runs/r1_export')
  exported = export_params.load('gs://runs/r1_export')
  assert exported.step == 12 and exported.class_names == names


def test_a_bucket_without_its_libraries_is_named_with_the_install_line(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(errors.FlagError, match=r"--workdir gs://b/run: writing there needs "
                     r"gcsfs, google-cloud-storage: pip install -e '\.\[gcs\]'"):
    workdir_lib.check_writable('gs://b/run')


def test_a_workdir_that_cannot_be_written_is_named_before_training(few_images_config, tmp_path):
  blocked = tmp_path / 'file'
  blocked.write_text('a file, not a folder')
  with pytest.raises(errors.FlagError, match=rf'--workdir {blocked}/run: cannot write there'):
    train.train(few_images_config(), str(blocked / 'run'))
