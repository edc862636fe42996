"""Fixed-shape batches: orientation-grouped sampling, batches as functions of their position.

Every global batch holds images of one orientation, so it has one of two static padded shapes
(``data.image_size`` for landscape images, its transpose for portrait ones, as MMDetection groups
by aspect ratio) and the train step compiles at most twice. The sampler draws the global batches
deterministically from (seed, epoch), the same on every process; process ``p`` of ``P`` takes the
``p``-th contiguous slice of ``global_batch / P`` examples of each. Flip and scale jitter come
from (seed, epoch, example index). A batch is thus a pure function of its position in the run
(``TrainBatches``, ``EvalBatches``): any worker process or thread can load any batch
(``loading``), nothing depends on worker timing or on where iteration started, and an iterator
restored with ``set_state`` yields exactly the batches it would have yielded.

A batch is a dict of numpy arrays with a leading local batch dimension B:
  images:   [B, H, W, 3] uint8 RGB, each image in the top-left corner, zeros around it.
  image_hw: [B, 2] int32, (height, width) of the resized image before padding.
  boxes:    [B, G, 4] float32, (x1, y1, x2, y2) in resized pixels; G = ``data.max_boxes``.
  labels:   [B, G] int32, contiguous labels 0..C-1.
  valid:    [B, G] bool, which box slots hold a box (padding slots: boxes 0, labels 0).
  image_id: [B] int64, the dataset's image id (-1 for padding examples).
  scale:    [B, 2] float32, (resized / original) for y and x.
  real:     [B] bool, False for the padding examples that fill the last evaluation batches.
Padding examples have a zero image, no boxes, ``image_hw`` the padded size, ``image_id`` -1 and
``scale`` 1.
"""

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from dla_jax import errors
from dla_jax.data import image_annotations
from dla_jax.data import loading
from dla_jax.data import transforms

Batch = dict[str, np.ndarray]


class GroupedSampler:
  """Global batches of example indices, one orientation each, reshuffled every epoch.

  Each orientation group is permuted and, when its size is not a multiple of the global batch,
  topped up with the first examples of its permutation (MMDetection's GroupSampler); the
  group's batches are then interleaved in a random order. Every epoch has the same number of
  batches.
  """

  def __init__(self, landscape: np.ndarray, global_batch: int, seed: int):
    """Groups the examples by orientation.

    Args:
      landscape: [N] bool, whether each example is landscape.
      global_batch: examples per global batch, over all processes.
      seed: with the epoch, fixes the order.
    """
    self._groups = [np.flatnonzero(landscape), np.flatnonzero(~landscape)]
    self._groups = [g for g in self._groups if len(g)]
    if not self._groups:
      raise ValueError('the dataset has no images')
    self.global_batch = global_batch
    self.seed = seed
    self.batches_per_epoch = sum(-(-len(g) // global_batch) for g in self._groups)

  def epoch(self, epoch: int) -> np.ndarray:
    """[batches_per_epoch, global_batch] int64 example indices of ``epoch``."""
    rng = np.random.default_rng([self.seed, epoch])
    batches = []
    for group in self._groups:
      order = rng.permutation(group)
      order = np.resize(order, -(-len(order) // self.global_batch) * self.global_batch)
      batches.append(order.reshape(-1, self.global_batch))
    batches = np.concatenate(batches)
    return batches[rng.permutation(len(batches))]


def augmentation(seed: int, epoch: int, index: int, short_side_range: Sequence[int],
                 flip_prob: float) -> tuple[int, bool]:
  """(short side, flip) of one training example, a function of (seed, epoch, index) only."""
  rng = np.random.default_rng([seed, epoch, index])
  short = int(rng.integers(min(short_side_range), max(short_side_range) + 1))
  return short, bool(rng.random() < flip_prob)


@dataclasses.dataclass(frozen=True)
class _Example:
  """What to load into one slot: a record index (-1: padding) and its transform."""
  index: int
  resize: tuple[int, int]  # (long, short) bound of the resized image
  flip: bool = False


def _load(records: Sequence[image_annotations.Record], reader: image_annotations.ImageReader,
          examples: Sequence[_Example], landscape: bool, image_size: Sequence[int],
          max_boxes: int) -> Batch:
  """Decodes, resizes, flips and pads the examples of one batch of one orientation.

  Every byte of the images is written once: the image, then the zeros around it, so the batch
  is allocated without first being cleared.
  """
  hw = transforms.padded_shape(landscape, image_size)
  size = len(examples)
  batch = {
      'images': np.empty((size, *hw, 3), np.uint8),
      'image_hw': np.tile(np.array(hw, np.int32), (size, 1)),
      'boxes': np.zeros((size, max_boxes, 4), np.float32),
      'labels': np.zeros((size, max_boxes), np.int32),
      'valid': np.zeros((size, max_boxes), bool),
      'image_id': np.full(size, -1, np.int64),
      'scale': np.ones((size, 2), np.float32),
      'real': np.zeros(size, bool),
  }
  for slot, example in enumerate(examples):
    if example.index < 0:
      batch['images'][slot] = 0
      continue
    record = records[example.index]
    h, w = transforms.rescale_size(record.height, record.width, example.resize)
    image, boxes = transforms.resize_and_flip(
        image_annotations.open_image(record, reader), record.boxes, (h, w), example.flip)
    batch['images'][slot, :h, :w] = image
    batch['images'][slot, h:] = 0
    batch['images'][slot, :h, w:] = 0
    batch['boxes'][slot], batch['labels'][slot], batch['valid'][slot] = transforms.pad_boxes(
        boxes, record.labels, max_boxes)
    batch['image_hw'][slot] = (h, w)
    batch['image_id'][slot] = record.image_id
    batch['scale'][slot] = (h / record.height, w / record.width)
    batch['real'][slot] = True
  return batch


def _process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  if global_batch % process_count:
    raise errors.ConfigError(f'train.global_batch: {global_batch} does not split over '
                             f'{process_count} processes')
  local = global_batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


class TrainBatches:
  """This process's training batch at any position of the run: ``batches(p)`` is step
  ``p % batches_per_epoch`` of epoch ``p // batches_per_epoch``. Picklable, for worker
  processes."""

  def __init__(self, records: Sequence[image_annotations.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, seed: int, scale: Sequence[int],
               short_side_range: Sequence[int], flip_prob: float, process_index: int = 0,
               process_count: int = 1,
               reader: image_annotations.ImageReader = image_annotations.read_file):
    """See ``TrainIterator``."""
    self._records = tuple(records)
    self._reader = reader
    self._landscape = np.array([r.landscape for r in records])
    self.sampler = GroupedSampler(self._landscape, global_batch, seed)
    self._slice = _process_slice(global_batch, process_index, process_count)
    self._long_side = max(scale)
    self._short_side_range = tuple(short_side_range)
    self._flip_prob = flip_prob
    self._image_size = tuple(image_size)
    self._max_boxes = max_boxes
    self._sampled = (-1, None)  # (epoch, its global batches), the epoch last sampled

  @property
  def num_examples(self) -> int:
    return len(self._records)

  def __call__(self, position: int) -> Batch:
    epoch, step = divmod(position, self.sampler.batches_per_epoch)
    sampled = self._sampled
    if sampled[0] != epoch:
      sampled = self._sampled = (epoch, self.sampler.epoch(epoch))
    indices = sampled[1][step]
    examples = []
    for index in indices[self._slice]:
      short, flip = augmentation(self.sampler.seed, epoch, int(index), self._short_side_range,
                                 self._flip_prob)
      examples.append(_Example(int(index), (self._long_side, short), flip))
    return _load(self._records, self._reader, examples, bool(self._landscape[indices[0]]),
                 self._image_size, self._max_boxes)


class EvalBatches:
  """The evaluation batches of this process, by number (see ``EvalIterator``). Picklable."""

  def __init__(self, records: Sequence[image_annotations.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, scale: Sequence[int], process_index: int = 0,
               process_count: int = 1,
               reader: image_annotations.ImageReader = image_annotations.read_file):
    """See ``EvalIterator``."""
    self._reader = reader
    landscape = np.array([r.landscape for r in records])
    local = _process_slice(global_batch, process_index, process_count)
    scale = (max(scale), min(scale))
    self._batches = []  # (examples of this process, landscape) per batch
    for is_landscape in (True, False):
      group = np.flatnonzero(landscape == is_landscape)
      padded = np.full(-(-len(group) // global_batch) * global_batch, -1)
      padded[:len(group)] = group
      for indices in padded.reshape(-1, global_batch):
        self._batches.append(([_Example(int(i), scale) for i in indices[local]], is_landscape))
    self._records = tuple(records)
    self._image_size = tuple(image_size)
    self._max_boxes = max_boxes

  def __len__(self) -> int:
    return len(self._batches)

  def __call__(self, number: int) -> Batch:
    examples, is_landscape = self._batches[number]
    return _load(self._records, self._reader, examples, is_landscape, self._image_size,
                 self._max_boxes)


class TrainIterator:
  """Endless training batches of this process, epoch after epoch, resumable.

  Batches load ahead in ``num_workers`` processes (0: in this one) with ``num_threads`` threads
  each (see ``loading.stream``); the position in the run is the whole state, so a restored
  iterator yields the same batches whatever the number of workers.
  """

  def __init__(self, records: Sequence[image_annotations.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, seed: int, scale: Sequence[int],
               short_side_range: Sequence[int], flip_prob: float, process_index: int = 0,
               process_count: int = 1,
               reader: image_annotations.ImageReader = image_annotations.read_file,
               num_workers: int = 0, num_threads: int = 2):
    """Samples from the first batch of epoch 0; ``set_state`` moves elsewhere.

    Args:
      records: the dataset.
      image_size: ``data.image_size``, padded (height, width) of landscape batches.
      max_boxes: ``data.max_boxes``, box slots per image.
      global_batch: examples per step over all processes.
      seed: fixes the order and the augmentation.
      scale: ``data.scale``, (long, short); its long side bounds the resized images.
      short_side_range: ``data.short_side_range``, (min, max) of the sampled short side.
      flip_prob: ``data.flip_prob``, probability of a horizontal flip.
      process_index: this process.
      process_count: number of processes; each loads ``global_batch / process_count``.
      reader: reads a record's image (the dataset's ``reader``).
      num_workers: loading processes (``data.num_workers``; 0: this process).
      num_threads: loading threads per loading process (``data.num_threads``).
    """
    self._batches = TrainBatches(
        records, image_size=image_size, max_boxes=max_boxes, global_batch=global_batch,
        seed=seed, scale=scale, short_side_range=short_side_range, flip_prob=flip_prob,
        process_index=process_index, process_count=process_count, reader=reader)
    self._loading = {'num_workers': num_workers, 'num_threads': num_threads}
    self._position = 0  # of the next batch to yield
    self._stream = None  # started at the first batch asked for

  @property
  def batches_per_epoch(self) -> int:
    return self._batches.sampler.batches_per_epoch

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self._stream is None:
      self._stream = loading.stream(self._batches, self._position, **self._loading)
    batch = next(self._stream)
    self._position += 1
    return batch

  def get_state(self) -> dict[str, int]:
    """The position of the next batch, and what it is valid for; json-serialisable."""
    epoch, step = divmod(self._position, self.batches_per_epoch)
    sampler = self._batches.sampler
    return {'epoch': epoch, 'step': step, 'seed': sampler.seed,
            'num_examples': self._batches.num_examples, 'global_batch': sampler.global_batch}

  def set_state(self, state: dict[str, int]) -> None:
    """Moves to a position saved by ``get_state``, for the same data, seed and batch size."""
    expected = self.get_state()
    for key in ('seed', 'num_examples', 'global_batch'):
      if state[key] != expected[key]:
        raise ValueError(f'iterator state is for {key}={state[key]}, this iterator has '
                         f'{expected[key]}')
    self.close()
    self._position = int(state['epoch']) * self.batches_per_epoch + int(state['step'])

  def close(self) -> None:
    """Stops the loading workers and threads; a later ``next`` starts them again."""
    if self._stream is not None:
      self._stream.close()
      self._stream = None


class EvalIterator:
  """One pass over every example exactly once, in a fixed order, for evaluation.

  Landscape images come first, then portrait ones, each in dataset order; each group's last
  global batch is filled with padding examples (``real`` False, zero image, no boxes).
  Iterating again starts a new pass.
  """

  def __init__(self, records: Sequence[image_annotations.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, scale: Sequence[int], process_index: int = 0,
               process_count: int = 1,
               reader: image_annotations.ImageReader = image_annotations.read_file,
               num_workers: int = 0, num_threads: int = 2):
    """Plans the batches; loading starts when iteration does.

    Args:
      records: the dataset.
      image_size: ``data.image_size``, padded (height, width) of landscape batches.
      max_boxes: ``data.max_boxes``, box slots per image.
      global_batch: examples per step over all processes.
      scale: ``data.scale``, (long, short) bound of the resized images.
      process_index: this process.
      process_count: number of processes; each loads ``global_batch / process_count``.
      reader: reads a record's image (the dataset's ``reader``).
      num_workers: loading processes (``data.num_workers``; 0: this process).
      num_threads: loading threads per loading process (``data.num_threads``).
    """
    self._batches = EvalBatches(
        records, image_size=image_size, max_boxes=max_boxes, global_batch=global_batch,
        scale=scale, process_index=process_index, process_count=process_count, reader=reader)
    self._loading = {'num_workers': num_workers, 'num_threads': num_threads}

  def __len__(self) -> int:
    return len(self._batches)

  def __iter__(self) -> Iterator[Batch]:
    stream = loading.stream(self._batches, 0, len(self), **self._loading)
    try:
      yield from stream
    finally:
      stream.close()
