"""Params-only export: the folder alone rebuilds the model, predicts and evaluates exactly like
the training checkpoint it came from, and holds no optimizer state."""

import os

import jax
import numpy as np
import pytest

from dla_jax import checkpoint
from dla_jax import errors
from dla_jax import evaluation
from dla_jax import export_params
from dla_jax import predict
from dla_jax.data import shapes

pytestmark = pytest.mark.slow  # every test here trains or compiles a detector, or starts processes


def _size(folder):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
             for f in files)


def test_export_holds_the_checkpoint_weights_config_and_class_names(trained_run, tmp_path):
  config, workdir, _ = trained_run
  out = str(tmp_path / 'export')
  assert export_params.export(config, workdir, out) == 12
  loaded = export_params.load(out)
  params, batch_stats, _ = checkpoint.restore_weights(config, workdir)
  jax.tree.map(np.testing.assert_array_equal, (loaded.params, loaded.batch_stats),
               (params, batch_stats))
  assert loaded.step == 12
  assert loaded.config.to_dict() == config.to_dict()
  assert loaded.class_names == list(shapes.CLASSES)
  # AdamW keeps two moments per parameter: the export is about a third of the checkpoint.
  assert _size(os.path.join(out, 'weights')) < 0.5 * _size(
      os.path.join(workdir, 'checkpoints', '12'))


def test_predict_and_evaluate_from_an_export_match_the_checkpoint(trained_run, tmp_path,
                                                                  few_images):
  config, workdir, metrics = trained_run
  out = str(tmp_path / 'export')
  export_params.export(config, workdir, out)
  loaded = export_params.load(out)
  images = [os.path.join(few_images[0], f'00000{i}.png') for i in range(2)]
  params, batch_stats, _ = checkpoint.restore_weights(config, workdir)
  names = checkpoint.read_classes(workdir, config.data.num_classes)
  from_checkpoint = predict.predict(config, params, batch_stats, names, images,
                                    str(tmp_path / 'a'))
  from_export = predict.predict(loaded.config, loaded.params, loaded.batch_stats,
                                loaded.class_names, images, str(tmp_path / 'b'))
  for a, b in zip(from_checkpoint, from_export):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      assert fa.read() == fb.read()
  metrics = evaluation.evaluate(loaded.config, str(tmp_path / 'eval'), loaded.params,
                                loaded.batch_stats, loaded.step)
  assert metrics == evaluation.evaluate(config, workdir)


def test_export_refuses_to_overwrite_and_load_names_what_is_missing(trained_run, tmp_path):
  config, workdir, _ = trained_run
  with pytest.raises(errors.FlagError, match='exports are not overwritten'):
    export_params.export(config, workdir, str(tmp_path))
  with pytest.raises(errors.FlagError, match='config.json is missing'):
    export_params.load(str(tmp_path))
  with pytest.raises(errors.FlagError, match='no checkpoint in'):
    export_params.export(config, str(tmp_path / 'empty'), str(tmp_path / 'out'))
