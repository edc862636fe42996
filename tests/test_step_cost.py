"""The ahead-of-time cost of the train and eval steps on 8 simulated devices: the gradient
all-reduce and nothing that gathers images' activations, memory and FLOPs read from XLA."""

import jax
import jax.numpy as jnp
import pytest

from dla_jax import step as step_lib
from dla_jax.configs import shapes_tiny
from dla_jax.models import detector
from dla_jax.tools import step_cost

HLO = """
  %all-reduce.1 = (f32[3,3,8,8]{3,2,1,0}, f32[8]{0}) all-reduce(%a, %b), replica_groups={}
  %ag = bf16[16,100]{1,0} all-gather-start(bf16[2,100]{1,0} %x), dimensions={0}
  ROOT %sort.2 = (f32[2,50]{1,0}, s32[2,50]{1,0}) sort(%c, %d), dimensions={1}
  %add = f32[8]{0} add(%e, %f)
"""


def _tiny_config():
  config = shapes_tiny.get_config()
  config.data.image_size = (64, 96)
  config.train.global_batch = 8
  return config


def test_hlo_ops_are_counted_with_their_bytes():
  found = step_cost.hlo_ops(HLO, ('all-reduce', 'all-gather', 'sort', 'while'))
  assert found['all-reduce'] == {('(f32[3,3,8,8], f32[8])', 4 * (3 * 3 * 8 * 8 + 8)): 1}
  assert found['all-gather'] == {('bf16[16,100]', 2 * 1600): 1}
  assert found['sort'] == {('(f32[2,50], s32[2,50])', 800): 1}
  assert not found['while']


@pytest.mark.slow
def test_train_step_all_reduces_gradients_and_gathers_no_activations():
  config = step_cost.step_config(_tiny_config(), 'float32')
  mesh = step_lib.make_mesh(jax.devices())
  cost = step_cost.step_cost(config, mesh, detector.forward_flops(config))
  ops = cost['ops']
  assert sum(o['bytes'] * o['count'] for o in ops['all-reduce']) >= cost['param_bytes']
  for op in ('all-gather', 'all-to-all', 'collective-permute'):
    assert not ops[op], ops[op]
  # The assigner's top-k runs per device, on one image of the 8: [1, G, N_level].
  assert ops['sort'] and all(o['shape'].startswith('(f32[1,') for o in ops['sort']), ops['sort']
  assert 2.5 < cost['flops_per_image'] / cost['forward_flops_per_image'] < 3.5
  memory = cost['memory_per_device_bytes']
  assert memory['arguments'] >= cost['param_bytes'] and memory['temporaries'] > 0
  assert cost['projected_h100_step_ms']['30%'] > cost['projected_h100_step_ms']['50%'] > 0


def test_eval_step_gathers_only_the_detections():
  config = _tiny_config()
  config.model.conv_impl = 'xla'
  mesh = step_lib.make_mesh(jax.devices())
  model = detector.build_detector(config, backend='gpu')
  variables = detector.abstract_variables(model)
  batch = {'images': jax.ShapeDtypeStruct((8, 64, 96, 3), jnp.uint8),
           'image_hw': jax.ShapeDtypeStruct((8, 2), jnp.int32)}
  compiled = step_lib.jit_eval_step(mesh, model=model, config=config).lower(
      variables['params'], variables.get('batch_stats', {}), batch).compile()
  gathered = step_cost.hlo_ops(compiled.as_text(), ('all-gather',))['all-gather']
  detections = config.inference.max_detections
  assert gathered
  for shape, _ in gathered:  # boxes, scores, classes and validity of 8 images' detections
    assert f'[8,{detections}' in shape, gathered
