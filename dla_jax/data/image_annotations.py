"""One image's annotations (the ``Record`` every source yields), box cleaning, and image reading
with clear errors.

A record describes one image of a dataset in its original pixels: where the image is, the size
the annotations state, and its training targets. Crowd regions are not targets (COCO keeps them
for evaluation only), and every box is clipped to the image and at least 1 px wide and high.
The dataset's image reader reads a record's image: ``FileReader`` for image files, or a
random-access source's own (``tfds_coco.SourceImages``).
"""

import dataclasses
import io
from typing import Callable

import numpy as np
from PIL import Image

from dla_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Record:
  """One image and its training targets, in original image pixels.

  Attributes:
    image_id: the dataset's image id (COCO ``images[].id``).
    path: the image file, or the name of the image in a random-access source (for messages).
    height: image height the annotations state, in pixels.
    width: image width the annotations state, in pixels.
    boxes: [N, 4] float32, (x1, y1, x2, y2), non-crowd boxes clipped to the image, each at
      least 1 px wide and high; N may be 0.
    labels: [N] int32, contiguous class labels 0..C-1.
    source_index: the image's index in a random-access source; -1 for image files.
  """
  image_id: int
  path: str
  height: int
  width: int
  boxes: np.ndarray
  labels: np.ndarray
  source_index: int = -1

  @property
  def landscape(self) -> bool:
    """Whether the image is wider than tall; square images count as landscape."""
    return self.width >= self.height


@dataclasses.dataclass
class BoxCounts:
  """Boxes left out of training targets while building records, for one warning per file."""
  degenerate: int = 0  # under 1 px wide or high as annotated
  outside: int = 0  # under 1 px once clipped to the image

  def message(self) -> str:
    return (f'dropped {self.degenerate} boxes under 1 px and {self.outside} boxes under 1 px '
            'once clipped to the image')


def clean_boxes(xywh: np.ndarray, height: int, width: int,
                counts: BoxCounts) -> tuple[np.ndarray, np.ndarray]:
  """Converts COCO boxes to corners, clips them to the image and drops those under 1 px.

  Args:
    xywh: [N, 4] float, COCO (x, y, width, height) in pixels.
    height: image height in pixels.
    width: image width in pixels.
    counts: incremented with the boxes dropped.

  Returns:
    boxes: [M, 4] float32, (x1, y1, x2, y2) clipped to the image.
    keep: [N] bool, which input boxes were kept.
  """
  xywh = np.asarray(xywh, np.float32).reshape(-1, 4)
  degenerate = (xywh[:, 2] < 1) | (xywh[:, 3] < 1)
  corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
  clipped = np.clip(corners, 0, np.array([width, height, width, height], np.float32))
  small = (clipped[:, 2] - clipped[:, 0] < 1) | (clipped[:, 3] - clipped[:, 1] < 1)
  counts.degenerate += int(degenerate.sum())
  counts.outside += int((small & ~degenerate).sum())
  keep = ~small & ~degenerate
  return clipped[keep], keep


def read_image(path: str, what: str = 'image', data: bytes | None = None,
               max_pixels: int = 0) -> Image.Image:
  """Reads an image file, or its encoded ``data`` named ``path``, as 8-bit RGB (``as_rgb``);
  ``what`` names it in errors (e.g. 'image 42'). ``max_pixels``, when not 0, sets Pillow's
  decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, for this whole process): Pillow refuses
  images of more than twice that many pixels.

  Raises:
    DataError: naming the file, when it is missing, unreadable, corrupt, over Pillow's
      decompression-bomb limit, or of pixels that do not scale to 8 bits.
  """
  if max_pixels:
    Image.MAX_IMAGE_PIXELS = max_pixels
  try:
    image = Image.open(path if data is None else io.BytesIO(data))
    image.load()  # decodes and closes the file
  except Image.DecompressionBombError as e:
    raise DataError(f'{path}: cannot read {what}: {str(e).rstrip(".")}; for real images this '
                    'large, raise data.max_image_pixels') from e
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: cannot read {what}: {e}') from e
  return as_rgb(image, f'{path}: cannot read {what}')


# Pillow's 16-bit grayscale modes (PNG and TIFF files open as I;16).
_SIXTEEN_BIT = ('I;16', 'I;16L', 'I;16B', 'I;16N')


def as_rgb(image: Image.Image, where: str) -> Image.Image:
  """``image`` as 8-bit RGB, its pixel values scaled, never clipped; ``where`` starts errors.

  - 16-bit grayscale (``I;16*``) and 32-bit integer grayscale (``I``) holding 16-bit values:
    ``round(v / 257)``, so that 65535 is 255 (16-bit RGB and RGBA PNGs reach here as 8-bit
    ``RGB``/``RGBA``: Pillow keeps each sample's high byte, the same scaling).
  - 32-bit float grayscale (``F``) in [0, 1]: ``round(255 v)``.
  - Palette, grayscale, CMYK and the rest: Pillow's conversion. Transparency (alpha, or a
    palette's transparent entry) is dropped, keeping the colours under it, as torchvision's
    and OpenCV's RGB readers do.

  Raises:
    DataError: ``I`` values outside 0-65535, ``F`` values outside [0, 1] or not finite, or a
      mode Pillow cannot convert; the message names the mode and the range found.
  """
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode in _SIXTEEN_BIT + ('I', 'F'):
    pixels = np.asarray(image).astype(np.float64)
    if mode == 'F':
      scale, limit, kind = 255.0, 1.0, 'float pixels (mode F) are read in [0, 1]'
    else:
      scale, limit, kind = 1 / 257, 65535.0, f'integer pixels (mode {mode}) are read in 0-65535'
    finite = np.isfinite(pixels).all()
    low, high = (pixels.min(), pixels.max()) if pixels.size else (0.0, 0.0)
    if not finite or low < 0 or high > limit:
      found = 'values that are not finite' if not finite else f'values {low:g} to {high:g}'
      raise DataError(f'{where}: {kind}, and it has {found}; convert it to 8-bit RGB')
    gray = np.round(pixels * scale).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
  try:
    if mode == 'PA' or (mode == 'P' and 'transparency' in image.info):
      image = image.convert('RGBA')  # Pillow warns converting these to RGB directly
    return image.convert('RGB')
  except ValueError as e:
    raise DataError(f'{where}: mode {mode} does not convert to RGB: {e}') from e


@dataclasses.dataclass(frozen=True)
class FileReader:
  """The image reader of image files: ``record.path`` read as RGB, with Pillow's
  decompression-bomb limit at ``max_pixels`` (``read_image``; 0 keeps Pillow's) in whichever
  process reads. Picklable, so that worker processes read with the same limit."""

  max_pixels: int = 0

  def __call__(self, record: Record) -> Image.Image:
    return read_image(record.path, f'image {record.image_id}', max_pixels=self.max_pixels)


read_file = FileReader()  # image files at Pillow's own limit


ImageReader = Callable[[Record], Image.Image]  # picklable, for worker processes


def open_image(record: Record, reader: ImageReader = read_file) -> Image.Image:
  """Reads a record's image as RGB and checks its size against the annotations.

  Raises:
    DataError: the image is missing, unreadable, corrupt or of another size than annotated.
  """
  image = reader(record)
  if image.size != (record.width, record.height):
    raise DataError(f'{record.path}: image is {image.width}x{image.height} (w x h) but the '
                    f'annotations say {record.width}x{record.height}')
  return image
