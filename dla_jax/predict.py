"""Runs a trained model on image files and writes PNGs with the detections drawn."""

import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageDraw

from dla_jax import serving
from dla_jax import step as step_lib
from dla_jax.data import image_annotations
from dla_jax.data import transforms
from dla_jax.models import detector

_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
         names: Sequence[str]) -> Image.Image:
  """Draws boxes [D, 4] (original pixels) with 'name score' labels on a copy of ``image``."""
  image = image.copy()
  pen = ImageDraw.Draw(image)
  for box, label, score in zip(boxes, labels, scores):
    colour = _COLOURS[int(label) % len(_COLOURS)]
    pen.rectangle(box.tolist(), outline=colour, width=2)
    pen.text((box[0] + 2, box[1] + 1), f'{names[int(label)]} {score:.2f}', fill=colour)
  return image


def detect_files(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
                 paths: Sequence[str]) -> list[tuple[Image.Image, np.ndarray, np.ndarray,
                                                     np.ndarray]]:
  """(image, boxes [n, 4] in its pixels, labels [n], scores [n]) of each image file, best
  first, from the model of ``config`` and the given weights."""
  model = detector.build_detector(config)
  mesh = step_lib.make_mesh(jax.devices()[:1])
  eval_step = step_lib.jit_eval_step(mesh, model=model, config=config)
  found = []
  for path in paths:
    image = image_annotations.read_image(path)
    padded, _, size = transforms.eval_input(image, np.zeros((0, 4), np.float32),
                                            config.data.scale, config.data.image_size)
    det = jax.device_get(eval_step(params, batch_stats, {
        'images': padded[None], 'image_hw': np.array([size], np.int32)}))
    keep = det.valid[0]
    found.append((image, transforms.to_original_pixels(det.boxes[0][keep], image.size, size),
                  det.labels[0][keep], det.scores[0][keep]))
  return found


def _write(out_dir: str, path: str, drawn: Image.Image) -> str:
  out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + '.png')
  drawn.save(out)
  return out


def predict(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
            names: Sequence[str], paths: Sequence[str], out_dir: str,
            score_threshold: float = 0.3) -> list[str]:
  """Detects objects in each image of ``paths`` with the model of ``config`` and the given
  weights (from ``checkpoint.restore_weights`` or ``export_params.load``); writes ``out_dir/<name>.png``
  for each, labelled with ``names[label]``, and returns those paths. Detections scoring under
  ``score_threshold`` are not drawn."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for path, (image, boxes, labels, scores) in zip(
      paths, detect_files(config, params, batch_stats, paths)):
    keep = scores >= score_threshold
    written.append(_write(out_dir, path, draw(image, boxes[keep], labels[keep], scores[keep],
                                              names)))
  return written


def predict_stablehlo(loaded: serving.StableHLODetector, paths: Sequence[str], out_dir: str,
                      score_threshold: float = 0.3) -> list[str]:
  """``predict`` with a stablehlo export loaded by ``serving.load``."""
  os.makedirs(out_dir, exist_ok=True)
  images = [image_annotations.read_image(path) for path in paths]
  written = []
  for path, image, detections in zip(paths, images, loaded.detect(images)):
    keep = detections.scores >= score_threshold
    written.append(_write(out_dir, path, draw(image, detections.boxes[keep],
                                              detections.classes[keep],
                                              detections.scores[keep], loaded.class_names)))
  return written
