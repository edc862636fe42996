"""Priors: level sizes for any padded size, centres, anchors and flat order."""

import numpy as np
import pytest

from dla_jax import priors as priors_lib


def test_level_sizes_round_up_at_each_stride_2_layer():
  # 800 x 1344: P3 100 x 168, P4 50 x 84, P5 25 x 42, P6 13 x 21, P7 7 x 11.
  assert priors_lib.feature_sizes((800, 1344), (8, 16, 32, 64, 128)) == [
      (100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]


def test_priors_are_level_major_row_major_with_square_anchors():
  p = priors_lib.make_priors((64, 96), (8, 16), anchor_scale=8.0)
  assert p.level_sizes == (8 * 12, 4 * 6)
  assert p.centers.shape == (96 + 24, 2)
  np.testing.assert_array_equal(p.centers[:2], [[4, 4], [12, 4]])
  np.testing.assert_array_equal(p.centers[12], [4, 12])
  np.testing.assert_array_equal(p.centers[96], [8, 8])
  np.testing.assert_array_equal(p.levels, [0] * 96 + [1] * 24)
  np.testing.assert_array_equal(p.anchors[96], [8 - 64, 8 - 64, 8 + 64, 8 + 64])
  np.testing.assert_array_equal(p.strides[95:97], [8, 16])


def test_stride_that_is_not_a_power_of_two_is_rejected():
  with pytest.raises(ValueError, match='model.strides: 12'):
    priors_lib.feature_sizes((64, 64), (8, 12))
