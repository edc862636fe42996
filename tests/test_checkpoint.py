"""Checkpoints: state and input position round-trip; a damaged latest save falls back."""

import os

import numpy as np
import pytest

import jax.numpy as jnp

from dla_jax import checkpoint as checkpoint_lib


def _state(value):
  return {'step': jnp.array(value, jnp.int32),
          'params': {'w': jnp.full((3, 4), value, jnp.float32)}}


def _save_two(workdir):
  checkpoints = checkpoint_lib.Checkpoints(str(workdir))
  for step in (1, 2):
    checkpoints.save(step, _state(step), {'epoch': 0, 'step': step})
  checkpoints.wait()
  checkpoints.close()
  return os.path.join(str(workdir), 'checkpoints')


def _damage(step_dir):
  """Truncates every file of a saved state to nothing."""
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    for name in files:
      open(os.path.join(root, name), 'w').close()


def test_state_and_input_position_round_trip(tmp_path):
  _save_two(tmp_path)
  state, data, step = checkpoint_lib.Checkpoints(str(tmp_path)).restore(_state(0))
  assert step == 2 and data == {'epoch': 0, 'step': 2}
  np.testing.assert_array_equal(state['params']['w'], np.full((3, 4), 2.0))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  directory = _save_two(tmp_path)
  _damage(os.path.join(directory, '2'))
  state, data, step = checkpoint_lib.Checkpoints(str(tmp_path)).restore(_state(0))
  assert step == 1 and data['step'] == 1 and int(state['step']) == 1
  assert 'checkpoint 2 in' in capsys.readouterr().out


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  directory = _save_two(tmp_path)
  for step in ('1', '2'):
    _damage(os.path.join(directory, step))
  with pytest.raises(ValueError, match=r'no checkpoint in .* can be read \(steps \[2, 1\]\)'):
    checkpoint_lib.Checkpoints(str(tmp_path)).restore(_state(0))
  with pytest.raises(ValueError, match='checkpoint 1 in .* cannot be read'):
    checkpoint_lib.Checkpoints(str(tmp_path)).restore(_state(0), step=1)


def test_empty_workdir_has_nothing_to_restore(tmp_path):
  assert checkpoint_lib.Checkpoints(str(tmp_path)).restore(_state(0)) is None
