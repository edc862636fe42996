"""Runs a detector exported with ``--mode export --format stablehlo``
(``dla_jax/export_stablehlo.py``), with jax, numpy and Pillow only: no flax, optax or model code.

  from dla_jax import serving
  detector = serving.load('/tmp/dla_shapes_stablehlo')
  for image in detector.detect(['a.jpg', 'b.png']):  # or [H, W, 3] uint8 arrays, PIL images
    print(image.boxes, image.scores, image.names)    # boxes in the original image's pixels

The folder's ``deploy.json`` states the contract that ``detect`` follows: each image is resized
keeping its aspect ratio to fit ``scale`` (bilinear, sizes rounded to the pixel), padded with
zeros at the bottom and right to the padded shape of its orientation (landscape when at least
as wide as tall), and sent as uint8 with its resized (height, width); normalisation happens
inside the program. Any number of images of one orientation go through one call.
"""

import dataclasses
import json
import pathlib
from typing import Any, Sequence
import zipfile

import jax
from jax import export as jax_export
import numpy as np
from PIL import Image

from dla_jax import errors
from dla_jax.data import image_annotations
from dla_jax.data import transforms

FORMAT = 'dla-jax-stablehlo'
VERSION = 1
MANIFEST = 'deploy.json'
WEIGHTS = 'weights.npz'


@dataclasses.dataclass(frozen=True)
class ImageDetections:
  """One image's detections, best first.

  Attributes:
    boxes: [n, 4] float32, (x1, y1, x2, y2) in the original image's pixels.
    scores: [n] float32.
    classes: [n] int32 labels, indices into the export's class names.
    names: the class name of each detection.
  """
  boxes: np.ndarray
  scores: np.ndarray
  classes: np.ndarray
  names: list[str]


def _read(path: pathlib.Path, what: str) -> bytes:
  if not path.exists():
    raise errors.DataError(f'{path}: missing; not a complete stablehlo export ({what})')
  return path.read_bytes()


class StableHLODetector:
  """A stablehlo export, loaded: ``detect`` runs it. Programs are deserialized when first
  needed."""

  def __init__(self, folder: str):
    self.folder = pathlib.Path(folder)
    try:
      manifest = json.loads(_read(self.folder / MANIFEST, 'its manifest'))
    except json.JSONDecodeError as e:
      raise errors.DataError(f'{self.folder / MANIFEST}: not valid JSON ({e})') from e
    if manifest.get('format') != FORMAT:
      raise errors.DataError(f'{self.folder / MANIFEST}: not a {FORMAT} export '
                             f'(format {manifest.get("format")!r})')
    if manifest.get('version', 0) > VERSION:
      raise errors.DataError(
          f'{self.folder / MANIFEST}: format version {manifest["version"]} was written by a '
          f'newer dla-jax; this one reads versions up to {VERSION}. Upgrade dla-jax.')
    self.manifest = manifest
    self.class_names = list(manifest['class_names'])
    self.scale = tuple(manifest['preprocessing']['scale'])
    self.image_size = tuple(manifest['preprocessing']['padded_hw_landscape'])
    try:
      with np.load(self.folder / WEIGHTS) as weights:
        self.weights = [weights[f'w{i}'] for i in range(manifest['num_weights'])]
    except FileNotFoundError as e:
      raise errors.DataError(f'{self.folder / WEIGHTS}: missing; not a complete stablehlo '
                             'export (its weights)') from e
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      raise errors.DataError(f'{self.folder / WEIGHTS}: unreadable or truncated ({e})') from e
    self._programs: dict[tuple[int, int], Any] = {}

  def program(self, padded_hw: tuple[int, int]):
    """The deserialized program of one padded (height, width)."""
    if padded_hw not in self._programs:
      name = self.manifest['programs'][f'{padded_hw[0]}x{padded_hw[1]}']
      data = _read(self.folder / name, 'a program')
      try:
        self._programs[padded_hw] = jax_export.deserialize(bytearray(data))
      except Exception as e:  # flatbuffers raises assorted errors on a damaged file
        raise errors.DataError(f'{self.folder / name}: unreadable or truncated program '
                               f'({type(e).__name__}: {e})') from e
    return self._programs[padded_hw]

  def detect(self, images: Sequence[Any], batch_size: int = 8) -> list[ImageDetections]:
    """Detections for each image: a file path, a PIL image or an [H, W, 3] uint8 RGB array.

    Images of one orientation go through their program ``batch_size`` at a time.
    """
    inputs = [_as_image(image, i) for i, image in enumerate(images)]
    prepared = [transforms.eval_input(image, np.zeros((0, 4), np.float32), self.scale,
                                      self.image_size) for image in inputs]
    detections: list[ImageDetections | None] = [None] * len(inputs)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, (padded, _, _) in enumerate(prepared):
      by_shape.setdefault(padded.shape[:2], []).append(i)
    for padded_hw, indices in by_shape.items():
      program = self.program(padded_hw)
      for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        out = jax.device_get(program.call(
            self.weights, np.stack([prepared[i][0] for i in chunk]),
            np.array([prepared[i][2] for i in chunk], np.int32)))
        for row, i in enumerate(chunk):
          n = int(out['counts'][row])
          classes = out['classes'][row, :n]
          detections[i] = ImageDetections(
              transforms.to_original_pixels(out['boxes'][row, :n], inputs[i].size,
                                            prepared[i][2]),
              out['scores'][row, :n], classes, [self.class_names[c] for c in classes])
    return detections


def _as_image(image: Any, index: int) -> Image.Image:
  """An RGB PIL image from a path, a PIL image or an [H, W, 3] uint8 array."""
  if isinstance(image, Image.Image):
    return image_annotations.as_rgb(image, f'image {index}')
  if isinstance(image, (str, pathlib.Path)):
    return image_annotations.read_image(str(image))
  array = np.asarray(image)
  if array.ndim != 3 or array.shape[-1] != 3:
    raise errors.DataError(f'image {index}: expected an RGB array [height, width, 3], got '
                           f'shape {array.shape}')
  if array.dtype != np.uint8:
    raise errors.DataError(f'image {index}: expected uint8 pixels (0-255), got {array.dtype}')
  return Image.fromarray(array)


def load(folder: str) -> StableHLODetector:
  """The export in ``folder`` (written by ``--mode export --format stablehlo``)."""
  return StableHLODetector(folder)


def is_stablehlo_export(folder: str) -> bool:
  """Whether ``folder`` holds a stablehlo export (rather than a params one)."""
  return (pathlib.Path(folder) / MANIFEST).exists()
