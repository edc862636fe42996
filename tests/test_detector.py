"""The whole network: its input normalisation, shapes of the paper's detectors, parameter counts,
frozen parts, bf16."""

import pytest

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dla_jax.configs import atss_r50_fpn_1x_coco
from dla_jax.configs import atss_r50_fpn_anchor_1x_coco
from dla_jax.configs import dla_r101_fpn_2x_coco
from dla_jax.configs import dla_r50_fpn_1x_coco
from dla_jax.configs import dla_r50_fpn_anchor_1x_coco
from dla_jax.configs import dla_x101_64x4d_fpn_2x_coco
from dla_jax.configs import shapes_tiny
from dla_jax import optim
from dla_jax import priors as priors_lib
from dla_jax.models import detector
from dla_jax.models import fpn as fpn_lib

# MMDetection v2's ATSS R50-FPN (configs/atss/atss_r50_fpn_1x_coco.py: anchor-based, 80
# classes), its parameters as PyTorch counts them (BatchNorm's scale and bias are parameters,
# its running statistics are not): 32,295,322 in all, 4,918,618 of them in its ATSSHead. Layer
# by layer, the head is 8 tower convs with GroupNorm 4,722,688, classifier 184,400, regression
# 9,220, centerness 2,305 and 5 scales; the FPN (3 laterals, 3 outputs, P6, P7) 3,868,672.
MMDET_ATSS_R50_FPN = 32_295_322
MMDET_ATSS_HEAD = 4_918_618
FPN_PARAMS = 3_868_672
CENTERNESS_PARAMS = 9 * 256 + 1
# DLA's metric branch replaces centerness: 1x1 conv 512 -> 256 (+bias), 3x3 conv 256 -> 1 (+bias).
METRIC_BRANCH_PARAMS = 512 * 256 + 256 + 9 * 256 + 1
# torchvision's ImageNet classifiers' parameter counts (its model docs' num_params), less the fc
# layer (2048 x 1000 + 1000) that a detector's backbone leaves out.
_FC = 2048 * 1000 + 1000
TORCHVISION_BACKBONES = {'resnet50': 25_557_032 - _FC, 'resnet101': 44_549_160 - _FC,
                         'resnext101_64x4d': 83_455_272 - _FC}


def _pytorch_style_count(variables, part: str | None = None) -> int:
  """Trainable params plus BatchNorm scale and bias (running statistics are buffers in torch),
  of the whole detector or of one ``part`` ('backbone', 'fpn', 'head')."""
  if part:
    variables = {k: {part: v[part]} if part in v else {} for k, v in variables.items()}
  bn = [v for p, v in jax.tree_util.tree_flatten_with_path(variables.get('batch_stats', {}))[0]
        if p[-1].key in ('scale', 'bias')]
  return sum(x.size for x in jax.tree.leaves(variables['params'])) + sum(x.size for x in bn)


def _abstract_variables(config):
  """The detector's variables as shapes only: nothing is initialised."""
  return jax.eval_shape(detector.build_detector(config).init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


@pytest.mark.parametrize('config_module', [dla_r50_fpn_1x_coco, dla_r50_fpn_anchor_1x_coco,
                                           dla_r101_fpn_2x_coco, dla_x101_64x4d_fpn_2x_coco])
@pytest.mark.parametrize('image_size', [(800, 1344), (1344, 800)])
def test_paper_detectors_output_one_row_per_prior_at_coco_size(config_module, image_size):
  config = config_module.get_config()
  model = detector.build_detector(config)
  images = jax.ShapeDtypeStruct((2, *image_size, 3), jnp.float32)
  outputs = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], images)
  n = sum(priors_lib.make_priors(image_size, fpn_lib.STRIDES, 8.0).level_sizes)
  assert outputs['cls_logits'].shape == (2, n, 80)
  assert outputs['box_reg'].shape == (2, n, 4)
  assert outputs['quality_logits'].shape == (2, n)
  assert all(o.dtype == jnp.float32 for o in outputs.values())


@pytest.mark.parametrize('config_module', [atss_r50_fpn_anchor_1x_coco, atss_r50_fpn_1x_coco])
def test_atss_r50_has_mmdetections_parameter_counts(config_module):
  """The anchor-based config is MMDetection's; the anchor-free one differs in how its outputs
  are decoded, not in any layer."""
  variables = _abstract_variables(config_module.get_config())
  assert _pytorch_style_count(variables, 'head') == MMDET_ATSS_HEAD
  assert _pytorch_style_count(variables, 'backbone') == TORCHVISION_BACKBONES['resnet50']
  assert _pytorch_style_count(variables, 'fpn') == FPN_PARAMS
  assert _pytorch_style_count(variables) == MMDET_ATSS_R50_FPN
  assert 'centerness' in variables['params']['head']
  assert 'metric_reduce' not in variables['params']['head']


@pytest.mark.parametrize('config_module', [dla_r50_fpn_1x_coco, dla_r50_fpn_anchor_1x_coco,
                                           dla_r101_fpn_2x_coco, dla_x101_64x4d_fpn_2x_coco])
def test_paper_detectors_count_atss_with_the_metric_branch_for_centerness(config_module):
  """ATSS R50-FPN's count, with its backbone swapped for the config's torchvision one."""
  config = config_module.get_config()
  variables = _abstract_variables(config)
  backbone = TORCHVISION_BACKBONES[config.model.backbone]
  assert _pytorch_style_count(variables, 'backbone') == backbone
  assert _pytorch_style_count(variables, 'head') == (
      MMDET_ATSS_HEAD - CENTERNESS_PARAMS + METRIC_BRANCH_PARAMS)
  assert _pytorch_style_count(variables) == (
      MMDET_ATSS_R50_FPN - TORCHVISION_BACKBONES['resnet50'] + backbone - CENTERNESS_PARAMS +
      METRIC_BRANCH_PARAMS)
  assert 'metric_reduce' in variables['params']['head']
  assert 'centerness' not in variables['params']['head']


def _tiny(**model_overrides):
  config = shapes_tiny.get_config()
  config.model.update(model_overrides)
  return config


@pytest.mark.slow
def test_priors_follow_the_head_output_order():
  """Per-level sizes of the priors equal the sizes of the head's per-level feature maps."""
  config = _tiny()
  model = detector.build_detector(config)
  images = jnp.zeros((1, 96, 160, 3))
  variables = detector.init_variables(config, jax.random.key(0))
  _, state = jax.jit(lambda v: model.apply(v, images, capture_intermediates=True))(variables)
  pyramid = state['intermediates']['fpn']['__call__'][0]
  p = priors_lib.make_priors((96, 160), fpn_lib.STRIDES, 8.0)
  assert tuple(x.shape[1] * x.shape[2] for x in pyramid) == p.level_sizes


def _after_one_step(config, model, variables):
  """``variables['params']`` after one optimizer step (lr with no warm-up) on random images."""
  images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  params = variables['params']
  tx = optim.make_optimizer(config, model.trainable(params), steps_per_epoch=10)

  def loss_fn(p):
    out = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, images)
    return sum(jnp.mean(jnp.square(v)) for v in out.values())

  @jax.jit
  def updated(params):
    updates, _ = tx.update(jax.grad(loss_fn)(params), tx.init(params), params)
    return optax.apply_updates(params, updates)

  return updated(params)


@pytest.mark.slow
def test_frozen_stages_and_batchnorm_get_exactly_zero_update():
  config = _tiny(frozen_stages=1, backbone_norm='frozen_bn')
  config.optim.warmup_steps = 0
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  params = variables['params']
  new = _after_one_step(config, model, variables)
  for name, before in params['backbone'].items():
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before,
                                           new['backbone'][name]))
    if name in ('conv1', 'layer1_0', 'layer1_1'):
      assert not any(changed), name
    else:
      assert all(changed), name
  # BatchNorm statistics are not parameters: the optimizer never sees them.
  assert all('bn' not in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(new)[0])


@pytest.mark.slow
def test_bn_eval_trains_batchnorm_affine_outside_frozen_stages_and_never_its_statistics():
  """MMDetection's norm_eval=True with requires_grad=True: in stages 2-4 BatchNorm's scale and
  bias train; in the stem and stage 1 nothing does; means and variances never change."""
  config = _tiny(frozen_stages=1, backbone_norm='bn_eval')
  config.optim.warmup_steps = 0
  model = detector.build_detector(config)
  variables = detector.init_variables(config, jax.random.key(0))
  stats = variables['batch_stats']['backbone']
  assert set(stats['layer2_0']['bn1']) == {'mean', 'var'}
  params = variables['params']
  assert set(params['backbone']['layer2_0']['bn1']) == {'scale', 'bias'}
  new = _after_one_step(config, model, variables)['backbone']
  for name, before in params['backbone'].items():
    for path, old in jax.tree_util.tree_flatten_with_path(before)[0]:
      leaf = new[name]
      for key in path:
        leaf = leaf[key.key]
      changed = bool(jnp.any(leaf != old))
      assert changed == (name not in ('conv1', 'bn1', 'layer1_0', 'layer1_1')), (name, path)


def test_group_norm_backbone_trains_every_stage_when_nothing_is_frozen():
  config = _tiny()
  assert config.model.backbone_norm == 'group_norm' and config.model.frozen_stages == -1
  model = detector.build_detector(config)
  variables = detector.abstract_variables(model)
  backbone = variables['params']['backbone']
  assert backbone['bn1']['scale'].shape == (32,)
  assert 'batch_stats' not in variables or not variables['batch_stats']
  mask = model.trainable(variables['params'])
  assert all(jax.tree.leaves(mask))


@pytest.mark.slow
def test_bfloat16_forward_agrees_with_float32():
  config = _tiny()
  images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  variables = detector.init_variables(config, jax.random.key(0))
  out32 = jax.jit(detector.build_detector(config).apply)(variables, images)
  config.model.dtype = 'bfloat16'
  out16 = jax.jit(detector.build_detector(config).apply)(variables, images)
  for k in out32:
    assert out16[k].dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(out32[k])))
    err = float(jnp.max(jnp.abs(out16[k] - out32[k])))
    assert err <= 0.05 * scale, f'{k}: bf16 error {err:.3g} vs scale {scale:.3g}'
    assert err > 0, f'{k}: bf16 path did not run in bfloat16'


@pytest.mark.parametrize('backend,expected', [('cpu', 'float32'), ('gpu', 'bfloat16'),
                                              ('tpu', 'bfloat16')])
def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_the_cpu(backend, expected):
  config = dla_r50_fpn_1x_coco.get_config()
  assert config.model.dtype == 'auto'  # the COCO configs' default
  assert detector.compute_dtype_name(config, backend) == expected
  model = detector.build_detector(config, backend=backend)
  assert model.backbone.dtype == model.head.dtype == jnp.dtype(expected)
  assert shapes_tiny.get_config().model.dtype == 'float32'  # reproducible on any backend


@pytest.mark.parametrize('shape', [(64, 64, 3), (1, 64, 64, 1), (1, 3, 64, 64)])
def test_images_of_wrong_rank_or_channels_are_rejected(shape):
  config = _tiny()
  model = detector.build_detector(config)
  with pytest.raises(ValueError, match=r'images must be \[batch, height, width, 3\]'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_normalize_standardises_the_image_and_zeroes_the_padding():
  images = np.full((2, 4, 6, 3), 200, np.uint8)
  image_hw = np.array([[4, 6], [2, 3]], np.int32)
  out = detector.normalize(jnp.asarray(images), jnp.asarray(image_hw))
  assert out.dtype == jnp.float32 and out.shape == (2, 4, 6, 3)
  expected = (200 - np.array(detector.IMAGENET_MEAN)) / np.array(detector.IMAGENET_STD)
  np.testing.assert_allclose(out[0], np.broadcast_to(expected, (4, 6, 3)), rtol=1e-6)
  np.testing.assert_allclose(out[1, :2, :3], np.broadcast_to(expected, (2, 3, 3)), rtol=1e-6)
  assert not np.asarray(out[1, 2:]).any() and not np.asarray(out[1, :, 3:]).any()
