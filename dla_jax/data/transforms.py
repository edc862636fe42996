"""Per-image transforms: aspect-keeping resize, horizontal flip, box padding.

Images are decoded, resized and flipped on the host with Pillow (C code that releases the GIL,
so a thread pool scales across cores) and sent to the devices as uint8; the detector normalises
them on the device (``models.detector.normalize``), which cuts host-to-device traffic by four.

Boxes are continuous pixel coordinates, (x1, y1, x2, y2) with the image spanning [0, W] x [0, H].
Pillow maps output pixel centres ``(i + 0.5) * in / out`` back onto the input, so resizing an
image to ``(new_h, new_w)`` maps a box exactly by the factors ``new_w / W`` and ``new_h / H``.
"""

from typing import Sequence

import numpy as np
from PIL import Image

def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
  """The largest (height, width) keeping the aspect ratio within ``scale``.

  Args:
    height: original height in pixels.
    width: original width in pixels.
    scale: (long, short): the long side may not exceed ``long`` nor the short side ``short``
      (MMDetection's ``keep_ratio`` rescale, e.g. (1333, 800) for COCO).

  Returns:
    (new_height, new_width), each rounded to the nearest pixel.
  """
  long_max, short_max = max(scale), min(scale)
  factor = min(long_max / max(height, width), short_max / min(height, width))
  return int(height * factor + 0.5), int(width * factor + 0.5)


def padded_shape(landscape: bool, image_size: Sequence[int]) -> tuple[int, int]:
  """The static padded (height, width) of an orientation group.

  Args:
    landscape: whether the image is at least as wide as tall.
    image_size: ``data.image_size``, the padded (height, width) of landscape images.
  """
  h, w = image_size
  return (h, w) if landscape else (w, h)


def resize_and_flip(image: Image.Image, boxes: np.ndarray, size: tuple[int, int],
                    flip: bool) -> tuple[np.ndarray, np.ndarray]:
  """Resizes (bilinear) to ``size`` and optionally mirrors left-right, boxes alike.

  Args:
    image: RGB Pillow image.
    boxes: [N, 4] float32, (x1, y1, x2, y2) in the pixels of ``image``.
    size: (new_height, new_width).
    flip: mirror the resized image left-right.

  Returns:
    image: [new_height, new_width, 3] uint8.
    boxes: [N, 4] float32 in resized pixels.
  """
  new_h, new_w = size
  factors = np.array([new_w / image.width, new_h / image.height] * 2, np.float32)
  boxes = boxes * factors
  if image.size != (new_w, new_h):
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
  if flip:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    boxes = np.stack([new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], axis=1)
  return np.asarray(image), boxes


def eval_input(image: Image.Image, boxes: np.ndarray, scale: Sequence[int],
               image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """An image as evaluation sees it: rescaled to ``scale``, unflipped, padded at the bottom and
  right to its orientation's padded shape.

  Args:
    image: RGB Pillow image.
    boxes: [G, 4] float32 in the pixels of ``image`` (may be empty).
    scale: ``data.scale``.
    image_size: ``data.image_size``.

  Returns:
    padded: [H, W, 3] uint8, the padded input.
    boxes: [G, 4] float32 in the input's pixels.
    size: (height, width) of the image inside the padding.
  """
  size = rescale_size(image.height, image.width, scale)
  resized, boxes = resize_and_flip(image, boxes, size, False)
  padded = np.zeros((*padded_shape(image.width >= image.height, image_size), 3), np.uint8)
  padded[:size[0], :size[1]] = resized
  return padded, boxes, size


def to_original_pixels(boxes: np.ndarray, original_wh: tuple[int, int],
                       resized_hw: tuple[int, int]) -> np.ndarray:
  """Boxes [..., 4] (x1, y1, x2, y2) in resized pixels -> in the pixels of the original image
  of (width, height) ``original_wh``, resized to (height, width) ``resized_hw``."""
  (w, h), (new_h, new_w) = original_wh, resized_hw
  return boxes * np.array([w / new_w, h / new_h] * 2, np.float32)


def pad_boxes(boxes: np.ndarray, labels: np.ndarray,
              max_boxes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pads to ``max_boxes`` slots; with more boxes than that, keeps the largest by area.

  Kept boxes stay in their input order.

  Args:
    boxes: [N, 4] float32, (x1, y1, x2, y2).
    labels: [N] int32.
    max_boxes: G, the number of slots.

  Returns:
    boxes: [G, 4] float32, zeros in empty slots.
    labels: [G] int32, zeros in empty slots.
    valid: [G] bool, True for the min(N, G) filled slots, which come first.
  """
  if len(boxes) > max_boxes:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.sort(np.argsort(-area, kind='stable')[:max_boxes])
    boxes, labels = boxes[keep], labels[keep]
  n = len(boxes)
  out_boxes = np.zeros((max_boxes, 4), np.float32)
  out_labels = np.zeros(max_boxes, np.int32)
  out_boxes[:n], out_labels[:n] = boxes, labels
  return out_boxes, out_labels, np.arange(max_boxes) < n
