"""Torchvision weight import: converted ResNet/ResNeXt weights reproduce torchvision's features."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
from torchvision.models import resnet as tv_resnet

from configs import shapes_tiny
from dla_jax.models import detector
from dla_jax.models import pretrained
from dla_jax.models import resnet
from dla_jax.tools import import_torchvision


def _torchvision_model(arch: str) -> torch.nn.Module:
  spec = resnet.get_spec(arch)
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


def _torchvision_features(model: torch.nn.Module, image: np.ndarray) -> list[np.ndarray]:
  x = torch.from_numpy(image.transpose(0, 3, 1, 2))
  with torch.no_grad():
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    c2 = model.layer1(x)
    c3 = model.layer2(c2)
    c4 = model.layer3(c3)
    c5 = model.layer4(c4)
  return [c.numpy().transpose(0, 2, 3, 1) for c in (c3, c4, c5)]


def _state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in model.state_dict().items()}


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


def test_state_dict_of_another_architecture_names_the_keys():
  state = _state_dict(_torchvision_model('resnet18'))
  with pytest.raises(ValueError, match=r"architecture 'resnet34'.*missing keys \[layer1\.2\."):
    pretrained.torchvision_to_flax(state, 'resnet34')
  with pytest.raises(ValueError, match=r'shapes differ for \[bn1\.bias: \(64,\) vs \(32,\)'):
    pretrained.torchvision_to_flax(state, 'resnet18', width=32)


def test_state_dict_with_missing_keys_names_them():
  state = _state_dict(_torchvision_model('resnet18'))
  del state['layer3.1.bn2.running_var']
  with pytest.raises(ValueError, match=r'1 missing keys \[layer3\.1\.bn2\.running_var\]'):
    pretrained.torchvision_to_flax(state, 'resnet18')


def test_import_command_writes_weights_that_config_loads(tmp_path):
  model = _torchvision_model('resnet18')
  torch.save(model.state_dict(), tmp_path / 'r18.pth')
  out = tmp_path / 'r18'
  import_torchvision.main(['--arch', 'resnet18', '--state_dict', str(tmp_path / 'r18.pth'),
                           '--out', str(out)])
  config = shapes_tiny.get_config()
  config.model.backbone_width = 64
  config.model.backbone_norm = 'frozen_bn'
  config.model.backbone_init = str(out)
  variables = detector.init_variables(detector.build_detector(config), config,
                                      jax.random.key(0))
  expected = pretrained.torchvision_to_flax(_state_dict(model), 'resnet18')
  for c in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, variables[c]['backbone'], expected[c])

  config.model.backbone = 'resnet34'
  with pytest.raises(ValueError, match='model.backbone_init: backbone at .* does not match'):
    detector.init_variables(detector.build_detector(config), config, jax.random.key(0))
  config.model.backbone_init = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='model.backbone_init'):
    detector.init_variables(detector.build_detector(config), config, jax.random.key(0))


def test_import_command_rejects_a_file_that_is_not_a_state_dict(tmp_path):
  (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
  with pytest.raises(ValueError, match='junk.pth: not a readable torch state_dict'):
    import_torchvision.read_state_dict(str(tmp_path / 'junk.pth'))
