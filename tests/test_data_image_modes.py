"""Every image mode is read as 8-bit RGB by scaling its values, by each reader: training's and
evaluation's (``open_image``), predict's (``read_image``) and serving's (paths and PIL images);
values that cannot be scaled are refused with one message naming the file and the mode, and so
are files that hold no image: empty, past Pillow's decompression-bomb limit, a link loop."""

import struct
import warnings
import zlib

import numpy as np
from PIL import Image
import pytest

from dla_jax import errors
from dla_jax import serving
from dla_jax.data import image_annotations

RAMP = np.arange(256, dtype=np.int64).reshape(16, 16)  # every 8-bit value once


def _png16(path, samples: np.ndarray, color_type: int) -> None:
  """A 16-bit PNG (which Pillow cannot write): ``samples`` [H, W] or [H, W, C] in 0-65535;
  color type 0 gray, 2 RGB (PNG specification, section 11.2.2)."""
  height, width = samples.shape[:2]
  rows = b''.join(b'\0' + samples[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  path.write_bytes(b'\x89PNG\r\n\x1a\n' +
                   chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, color_type, 0, 0, 0)) +
                   chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def _palette_with_transparency(path) -> None:
  image = Image.fromarray(RAMP.astype(np.uint8), 'P')
  image.putpalette(np.stack([RAMP.ravel(), 255 - RAMP.ravel(), RAMP.ravel() // 2], -1)
                   .astype(np.uint8).tobytes())
  image.save(path, transparency=7)  # palette entry 7 transparent: a tRNS chunk


def _write(path, mode: str) -> np.ndarray:
  """Writes the ramp as an image of ``mode``; returns the [16, 16, 3] RGB it must read as."""
  gray = np.repeat(RAMP[..., None], 3, axis=-1)
  if mode == 'I;16':
    _png16(path, RAMP * 257, color_type=0)
  elif mode == 'RGB;16':
    colour = np.stack([RAMP, 255 - RAMP, RAMP // 2], -1)
    _png16(path, colour * 257, color_type=2)
    return colour
  elif mode == 'I':
    Image.fromarray((RAMP * 257).astype(np.int32), 'I').save(path)
  elif mode == 'F':
    Image.fromarray((RAMP / 255).astype(np.float32), 'F').save(path)
  elif mode == 'P':
    _palette_with_transparency(path)
    return np.stack([RAMP, 255 - RAMP, RAMP // 2], -1)
  elif mode == 'LA':
    Image.fromarray(np.stack([RAMP, 255 - RAMP], -1).astype(np.uint8), 'LA').save(path)
  elif mode == 'RGBA':
    Image.fromarray(np.concatenate([gray, 0 * RAMP[..., None]], -1).astype(np.uint8),
                    'RGBA').save(path)
  elif mode == 'CMYK':  # K = 255 - v, no ink otherwise: RGB v
    ink = np.zeros((16, 16, 4), np.uint8)
    ink[..., 3] = 255 - RAMP
    Image.fromarray(ink, 'CMYK').save(path)
  return gray


def _every_reader(path) -> dict[str, np.ndarray]:
  record = image_annotations.Record(1, str(path), 16, 16, np.zeros((0, 4), np.float32),
                                    np.zeros((0,), np.int32))
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # Pillow's warnings (a palette's transparency) fail the test
    return {'training and evaluation': image_annotations.open_image(record),
            'predict': image_annotations.read_image(str(path)),
            'serving, a path': serving._as_image(str(path), 0),  # pylint: disable=protected-access
            'serving, a PIL image': serving._as_image(Image.open(path), 0)}  # pylint: disable=protected-access


@pytest.mark.parametrize('mode,suffix', [('I;16', 'png'), ('RGB;16', 'png'), ('I', 'tif'),
                                         ('F', 'tif'), ('P', 'png'), ('LA', 'png'),
                                         ('RGBA', 'png'), ('CMYK', 'tif')])
def test_each_mode_reads_as_its_8_bit_values(tmp_path, mode, suffix):
  path = tmp_path / f'ramp.{suffix}'
  expected = _write(path, mode)
  for reader, image in _every_reader(path).items():
    assert image.mode == 'RGB', reader
    np.testing.assert_array_equal(np.asarray(image), expected, err_msg=reader)


def test_a_16_bit_ramp_is_scaled_not_clipped(tmp_path):
  """Pillow's own conversion clips 16-bit values at 255: the ramp would read 99.6% white."""
  _png16(tmp_path / 'ramp.png', RAMP * 257, color_type=0)
  assert np.asarray(Image.open(tmp_path / 'ramp.png').convert('RGB')).mean() > 250
  assert np.asarray(image_annotations.read_image(str(tmp_path / 'ramp.png'))).mean() == 127.5


@pytest.mark.parametrize('mode,values,found', [
    ('I', [0, 70000], 'values 0 to 70000'), ('I', [-1, 5], 'values -1 to 5'),
    ('F', [0.0, 2.0], 'values 0 to 2'), ('F', [0.0, np.nan], 'not finite')])
def test_values_that_do_not_scale_are_refused_naming_file_and_mode(tmp_path, mode, values, found):
  path = tmp_path / 'odd.tif'
  Image.fromarray(np.array([values], np.int32 if mode == 'I' else np.float32), mode).save(path)
  with pytest.raises(errors.DataError) as raised:
    image_annotations.read_image(str(path), 'image 3')
  message = str(raised.value)
  assert message.startswith(f'{path}: cannot read image 3: '), message
  assert f'(mode {mode})' in message and found in message, message


def test_an_image_past_the_decompression_bomb_limit_is_refused_naming_it(tmp_path, monkeypatch):
  """Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS`` before decoding them; a
  DecompressionBombError is not an OSError, and used to escape as a traceback."""
  Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / 'big.png')
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # 256 pixels is past 2 x 100
  with pytest.raises(errors.DataError, match='decompression bomb') as raised:
    image_annotations.read_image(str(tmp_path / 'big.png'), 'image 9')
  assert str(raised.value).startswith(f'{tmp_path / "big.png"}: cannot read image 9: ')


def test_a_raised_pixel_limit_reads_what_pillows_own_refuses(tmp_path, monkeypatch):
  Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / 'big.png')
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # Pillow's limit, as low as the image
  record = image_annotations.Record(image_id=9, path=str(tmp_path / 'big.png'), height=16,
                                    width=16, boxes=np.zeros((0, 4), np.float32),
                                    labels=np.zeros(0, np.int32))
  with pytest.raises(errors.DataError, match='raise data.max_image_pixels'):
    image_annotations.read_file(record)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # 256 is past 1 x 200
    image = image_annotations.FileReader(max_pixels=200)(record)
  np.testing.assert_array_equal(np.asarray(image)[..., 0], RAMP)


@pytest.mark.parametrize('make', ['empty', 'loop'])
def test_an_empty_file_or_a_link_loop_is_refused_naming_it(tmp_path, make):
  path = tmp_path / 'a.png'
  if make == 'empty':
    path.write_bytes(b'')
  else:  # a.png -> b.png -> a.png
    (tmp_path / 'b.png').symlink_to(path)
    path.symlink_to(tmp_path / 'b.png')
  with pytest.raises(errors.DataError) as raised:
    image_annotations.read_image(str(path), 'image 3')
  assert str(raised.value).startswith(f'{path}: cannot read image 3: '), raised.value
  assert len(str(raised.value).splitlines()) == 1
