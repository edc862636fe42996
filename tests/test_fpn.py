"""The FPN reproduces torchvision's FeaturePyramidNetwork with LastLevelP6P7 (ReLU before P7, as
the ATSS authors' code), and without that ReLU as MMDetection's ATSS config builds it."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dla_jax.models import fpn as fpn_lib


@pytest.mark.parametrize('relu_before_p7', [True, False])
def test_fpn_matches_torchvision_feature_pyramid_with_p6_p7(relu_before_p7):
  torch = pytest.importorskip('torch')
  from torchvision.ops import feature_pyramid_network as tv_fpn  # pylint: disable=C0415
  in_channels, channels = [8, 16, 32], 16
  torch.manual_seed(0)
  reference = tv_fpn.FeaturePyramidNetwork(in_channels, channels,
                                           tv_fpn.LastLevelP6P7(channels, channels)).eval()
  for p in reference.parameters():
    p.data.normal_(0, 0.1)
  rng = np.random.default_rng(0)
  # Odd sizes (25 x 42 at C3, as at 800 x 1344) exercise the non-integer upsampling path.
  feats = [rng.normal(size=(2, h, w, c)).astype(np.float32)
           for (h, w), c in zip([(25, 42), (13, 21), (7, 11)], in_channels)]
  with torch.no_grad():
    expected = list(reference({str(i): torch.from_numpy(f.transpose(0, 3, 1, 2))
                               for i, f in enumerate(feats)}).values())
    if not relu_before_p7:  # MMDetection: P7 = conv(P6)
      expected[-1] = reference.extra_blocks.p7(expected[-2])
  expected = [v.numpy().transpose(0, 2, 3, 1) for v in expected]

  sd = {k: v.numpy() for k, v in reference.state_dict().items()}
  conv = lambda name: {'kernel': sd[f'{name}.weight'].transpose(2, 3, 1, 0),
                       'bias': sd[f'{name}.bias']}
  params = {f'lateral{i}': conv(f'inner_blocks.{i}.0') for i in range(3)}
  params |= {f'output{i}': conv(f'layer_blocks.{i}.0') for i in range(3)}
  params |= {'p6': conv('extra_blocks.p6'), 'p7': conv('extra_blocks.p7')}
  got = fpn_lib.FPN(channels, relu_before_p7).apply({'params': params},
                                                    [jnp.asarray(f) for f in feats])
  assert len(got) == 5
  for level, (g, e) in enumerate(zip(got, expected), start=3):
    assert g.shape == e.shape, f'P{level}'
    np.testing.assert_allclose(np.asarray(g), e, rtol=1e-4, atol=1e-4, err_msg=f'P{level}')


def test_fpn_strides_halve_from_p3_to_p7():
  feats = [jnp.zeros((1, 64 // s, 96 // s, 4)) for s in (8, 16, 32)]
  out = jax.eval_shape(lambda f: fpn_lib.FPN(8).init_with_output(jax.random.key(0), f)[0], feats)
  assert [o.shape[1:3] for o in out] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
  assert fpn_lib.STRIDES == (8, 16, 32, 64, 128)
