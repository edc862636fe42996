"""ImageNet backbone weights: converted torchvision weights reproduce torchvision's features;
``model.backbone_init`` takes the imported orbax folder or the ``.pth`` file alike; a wrong file
is a ConfigError naming the field, the file and the keys; and a config that would freeze parts
of a random backbone is refused, without torch, naming the weights it needs."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dla_jax import config_check
from dla_jax import errors
from dla_jax.configs import dla_r50_fpn_1x_coco
from dla_jax.configs import dla_x101_64x4d_fpn_2x_coco
from dla_jax.configs import shapes_tiny
from dla_jax.models import detector
from dla_jax.models import pretrained
from dla_jax.models import resnet
from dla_jax.tools import import_torchvision

try:
  import torch  # pylint: disable=g-import-not-at-top
  from torchvision.models import resnet as tv_resnet  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs the 'torch' extra")


def _torchvision_model(arch: str) -> 'torch.nn.Module':
  spec = resnet.ARCHITECTURES[arch]
  block = tv_resnet.Bottleneck if spec.bottleneck else tv_resnet.BasicBlock
  torch.manual_seed(0)
  model = tv_resnet.ResNet(block, list(spec.stage_sizes), groups=spec.groups,
                           width_per_group=spec.width_per_group)
  # Random BatchNorm statistics and affine terms, so that a mix-up of mean/var/scale/bias shows.
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.2, 0.2)
      m.running_mean.uniform_(-0.2, 0.2)
      m.running_var.uniform_(0.5, 1.5)
  return model.eval()


def _torchvision_features(model: 'torch.nn.Module', image: np.ndarray) -> list[np.ndarray]:
  x = torch.from_numpy(image.transpose(0, 3, 1, 2))
  with torch.no_grad():
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    c2 = model.layer1(x)
    c3 = model.layer2(c2)
    c4 = model.layer3(c3)
    c5 = model.layer4(c4)
  return [c.numpy().transpose(0, 2, 3, 1) for c in (c3, c4, c5)]


def _state_dict(model: 'torch.nn.Module') -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _config(backbone_init: str, arch: str = 'resnet18'):
  """The tiny shapes config with a full-width frozen-BatchNorm ``arch`` started from
  ``backbone_init``."""
  config = shapes_tiny.get_config()
  config.model.backbone = arch
  config.model.backbone_width = 64
  config.model.backbone_norm = 'frozen_bn'
  config.model.backbone_init = str(backbone_init)
  return config


def _init(config):
  return detector.init_variables(config, jax.random.key(0))


@pytest.fixture(name='r18', scope='module')
def _r18(tmp_path_factory):
  """A random torchvision ResNet-18: its model, state_dict file and the imported folder."""
  root = tmp_path_factory.mktemp('r18')
  model = _torchvision_model('resnet18')
  torch.save(model.state_dict(), root / 'r18.pth')
  import_torchvision.main(['--arch', 'resnet18', '--state_dict', str(root / 'r18.pth'),
                           '--out', str(root / 'r18')])
  return model, root / 'r18.pth', root / 'r18'


def test_r50_coco_config_without_weights_is_refused_without_torch_naming_the_import(
    monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails
  with pytest.raises(errors.ConfigError) as raised:
    config_check.check_backbone_init(dla_r50_fpn_1x_coco.get_config().model)
  message = str(raised.value)
  assert message.startswith('model.backbone_init: empty')
  assert "model.backbone_norm='bn_eval'" in message and 'model.frozen_stages=1' in message
  assert ('`dla-import-torchvision --arch resnet50 --state_dict resnet50-0676ba61.pth '
          '--out DIR`') in message
  assert '--config.model.backbone_init=resnet50-0676ba61.pth' in message


def test_x101_config_without_weights_names_the_weights_mmdetection_used():
  with pytest.raises(errors.ConfigError) as raised:
    config_check.check_backbone_init(dla_x101_64x4d_fpn_2x_coco.get_config().model)
  message = str(raised.value)
  assert "MMDetection's open-mmlab://resnext101_64x4d" in message
  assert '--state_dict resnext101_64x4d-ee2c6f71.pth' in message
  assert 'mmcv/model_zoo/open_mmlab.json' in message


def test_shapes_config_trained_from_scratch_passes_the_check():
  config_check.check_backbone_init(shapes_tiny.get_config().model)


def test_frozen_stem_of_a_random_group_norm_backbone_is_refused():
  config = shapes_tiny.get_config()
  config.model.frozen_stages = 0
  with pytest.raises(errors.ConfigError, match=r'model\.frozen_stages=0 freezes its stem:'):
    config_check.check_backbone_init(config.model)


def test_weights_for_a_group_norm_backbone_are_refused(tmp_path):
  config = shapes_tiny.get_config()
  config.model.backbone_init = str(tmp_path)
  with pytest.raises(errors.ConfigError, match=r"^model\.backbone_norm: 'group_norm'"):
    config_check.check_backbone_init(config.model)


def test_every_architecture_names_its_imagenet_weights():
  assert set(pretrained.IMAGENET_WEIGHTS) == set(resnet.ARCHITECTURES)


def test_backbone_init_that_does_not_exist_is_named(tmp_path):
  with pytest.raises(errors.ConfigError,
                     match=r'^model\.backbone_init: no orbax folder or torch state_dict file at '
                           r'.*nowhere'):
    _init(_config(tmp_path / 'nowhere'))


def test_folder_that_is_not_a_backbone_checkpoint_is_refused(tmp_path):
  with pytest.raises(errors.ConfigError,
                     match=r'^model\.backbone_init: .* is a folder but not a backbone checkpoint'):
    _init(_config(tmp_path))


def test_pth_without_torch_names_the_install_line(tmp_path, monkeypatch):
  (tmp_path / 'r18.pth').write_bytes(b'weights')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails
  with pytest.raises(errors.ConfigError,
                     match=r"^model\.backbone_init: reading the torch file .*r18\.pth needs "
                           r"torch: pip install -e '\.\[torch\]'"):
    _init(_config(tmp_path / 'r18.pth'))


@needs_torch
@pytest.mark.parametrize('arch', ['resnet50', 'resnext101_32x4d'])
def test_converted_torchvision_backbone_gives_same_c3_c5(arch):
  model = _torchvision_model(arch)
  image = np.random.default_rng(0).normal(size=(1, 96, 128, 3)).astype(np.float32)
  expected = _torchvision_features(model, image)
  variables = pretrained.torchvision_to_flax(_state_dict(model), arch)
  got = jax.jit(resnet.ResNet(arch).apply)(variables, jnp.asarray(image))
  for level, (g, e) in enumerate(zip(got, expected), start=3):
    assert g.shape == e.shape, f'C{level}'
    rel = np.max(np.abs(np.asarray(g) - e)) / np.max(np.abs(e))
    assert rel <= 1e-4, f'C{level}: max relative error {rel:.2e}'


@needs_torch
def test_state_dict_of_another_architecture_names_the_keys():
  state = _state_dict(_torchvision_model('resnet18'))
  with pytest.raises(ValueError, match=r"architecture 'resnet34'.*missing keys \[layer1\.2\."):
    pretrained.torchvision_to_flax(state, 'resnet34')
  with pytest.raises(ValueError, match=r'shapes differ for \[bn1\.bias: \(64,\) vs \(32,\)'):
    pretrained.torchvision_to_flax(state, 'resnet18', width=32)


@pytest.mark.slow
@needs_torch
def test_pth_file_and_imported_folder_give_the_same_variables(r18):
  model, pth, folder = r18
  expected = pretrained.torchvision_to_flax(_state_dict(model), 'resnet18')
  from_pth = _init(_config(pth))
  from_folder = _init(_config(folder))
  for c in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, from_pth[c]['backbone'], expected[c])
    jax.tree.map(np.testing.assert_array_equal, from_folder[c]['backbone'], expected[c])


@pytest.mark.slow
@needs_torch
def test_bn_eval_backbone_takes_the_same_weights_with_batchnorm_affine_as_params(r18):
  _, pth, folder = r18
  frozen = _init(_config(pth))
  config = _config(folder)
  config.model.backbone_norm = 'bn_eval'
  moved = _init(config)
  assert moved['params']['backbone']['layer3_0']['downsample_bn'].keys() == {'scale', 'bias'}
  assert moved['batch_stats']['backbone']['layer3_0']['downsample_bn'].keys() == {'mean', 'var'}
  images = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 96, 3)), jnp.float32)
  features = lambda norm, variables: resnet.ResNet('resnet18', norm=norm).apply(
      {c: variables[c]['backbone'] for c in ('params', 'batch_stats')}, images)
  for a, b in zip(features('frozen_bn', frozen), features('bn_eval', moved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@needs_torch
def test_imported_folder_of_another_architecture_is_refused_naming_the_entries(r18):
  _, _, folder = r18
  with pytest.raises(errors.ConfigError,
                     match=r"^model\.backbone_init: backbone at .*r18 does not match "
                           r"model\.backbone='resnet34' \(width 64\); \d+ entries differ: "
                           r"\[\['batch_stats'\]\['layer1_2'\]"):
    _init(_config(folder, 'resnet34'))


@needs_torch
def test_pth_of_another_architecture_is_refused_naming_the_keys(r18):
  _, pth, _ = r18
  with pytest.raises(errors.ConfigError,
                     match=r"^model\.backbone_init: .*r18\.pth: state_dict does not match "
                           r"architecture 'resnet34': \d+ missing keys \[layer1\.2\."):
    _init(_config(pth, 'resnet34'))


@needs_torch
def test_pth_with_missing_keys_is_refused_naming_them(r18, tmp_path):
  model, _, _ = r18
  state = model.state_dict()
  del state['layer3.1.bn2.running_var']
  torch.save(state, tmp_path / 'partial.pth')
  with pytest.raises(errors.ConfigError,
                     match=r'^model\.backbone_init: .*partial\.pth: .*1 missing keys '
                           r'\[layer3\.1\.bn2\.running_var\]; 0 unexpected keys'):
    _init(_config(tmp_path / 'partial.pth'))


@needs_torch
@pytest.mark.parametrize('content, reason', [
    ('tensors', r'holds a list, not a state_dict'),
    ('module', r'is not a torch state_dict file that torch\.load\(weights_only=True\) reads '
               r'\(Unsupported global: GLOBAL torchvision\.models\.resnet\.ResNet'),
    ('bytes', r'is not a torch state_dict file that torch\.load\(weights_only=True\) reads'),
])
def test_pth_that_is_not_a_state_dict_is_refused_naming_the_file(r18, tmp_path, content,
                                                                 reason):
  model, _, _ = r18
  path = tmp_path / 'wrong.pth'
  if content == 'tensors':
    torch.save(list(model.state_dict().values()), path)
  elif content == 'module':
    torch.save(model, path)
  else:
    path.write_bytes(b'not a torch file')
  with pytest.raises(errors.ConfigError, match=rf'^model\.backbone_init: .*wrong\.pth {reason}'):
    _init(_config(path))


@needs_torch
def test_import_command_reports_a_wrong_file_on_one_line(tmp_path, capsys):
  (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
  with pytest.raises(SystemExit) as exited:
    import_torchvision.main(['--arch', 'resnet18', '--state_dict', str(tmp_path / 'junk.pth'),
                             '--out', str(tmp_path / 'out')])
  assert exited.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert 'error: --state_dict: ' in error and 'junk.pth is not a torch state_dict file' in error
  assert not (tmp_path / 'out').exists()
