"""Fixed-shape batches: orientation-grouped sampling, threaded loading, resumable iteration.

Every global batch holds images of one orientation, so it has one of two static padded shapes
(``data.image_size`` for landscape images, its transpose for portrait ones, as MMDetection groups
by aspect ratio) and the train step compiles at most twice. The sampler draws the global batches
deterministically from (seed, epoch), the same on every process; process ``p`` of ``P`` takes the
``p``-th contiguous slice of ``global_batch / P`` examples of each. Flip and scale jitter come
from (seed, epoch, example index), so a batch never depends on thread timing or on where
iteration started, and an iterator restored with ``set_state`` yields exactly the batches it
would have yielded.

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

import collections
import concurrent.futures
import dataclasses
from typing import Iterator, Sequence

import numpy as np

from dla_jax import errors
from dla_jax.data import records as records_lib
from dla_jax.data import transforms

Batch = dict[str, np.ndarray]
_Pending = tuple[Batch, list[concurrent.futures.Future]]  # a batch and its loading jobs


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


def _empty_batch(size: int, hw: tuple[int, int], max_boxes: int) -> Batch:
  return {
      'images': np.zeros((size, *hw, 3), np.uint8),
      'image_hw': np.tile(np.array(hw, np.int32), (size, 1)),
      'boxes': np.zeros((size, max_boxes, 4), np.float32),
      'labels': np.zeros((size, max_boxes), np.int32),
      'valid': np.zeros((size, max_boxes), bool),
      'image_id': np.full(size, -1, np.int64),
      'scale': np.ones((size, 2), np.float32),
      'real': np.zeros(size, bool),
  }


class _Loader:
  """Fills batches in a thread pool: decode (Pillow releases the GIL), resize, flip, pad."""

  def __init__(self, records: Sequence[records_lib.Record], image_size: Sequence[int],
               max_boxes: int, num_threads: int):
    self._records = records
    self._image_size = tuple(image_size)
    self._max_boxes = max_boxes
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads)

  def start(self, examples: Sequence[_Example], landscape: bool) -> _Pending:
    """Allocates a batch of one orientation and queues the loading of each of its examples."""
    hw = transforms.padded_shape(landscape, self._image_size)
    batch = _empty_batch(len(examples), hw, self._max_boxes)
    futures = [self._pool.submit(self._fill, batch, slot, e)
               for slot, e in enumerate(examples) if e.index >= 0]
    return batch, futures

  def _fill(self, batch: Batch, slot: int, example: _Example) -> None:
    record = self._records[example.index]
    size = transforms.rescale_size(record.height, record.width, example.resize)
    image, boxes = transforms.resize_and_flip(
        records_lib.open_image(record), record.boxes, size, example.flip)
    batch['images'][slot, :size[0], :size[1]] = image
    batch['boxes'][slot], batch['labels'][slot], batch['valid'][slot] = transforms.pad_boxes(
        boxes, record.labels, self._max_boxes)
    batch['image_hw'][slot] = size
    batch['image_id'][slot] = record.image_id
    batch['scale'][slot] = (size[0] / record.height, size[1] / record.width)
    batch['real'][slot] = True

  def finish(self, pending: _Pending) -> Batch:
    """Waits for a started batch; re-raises the first loading error (naming the file)."""
    batch, futures = pending
    for future in futures:
      future.result()
    return batch

  def cancel(self, pending: _Pending) -> None:
    """Drops a started batch; jobs already running finish into it unused."""
    for future in pending[1]:
      future.cancel()

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)


def _process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  if global_batch % process_count:
    raise errors.ConfigError(f'train.global_batch: {global_batch} does not split over '
                             f'{process_count} processes')
  local = global_batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


class TrainIterator:
  """Endless training batches of this process, epoch after epoch, resumable.

  Keeps ``prefetch`` batches loading ahead in ``num_threads`` threads.
  """

  def __init__(self, records: Sequence[records_lib.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, seed: int, scale: Sequence[int],
               short_side_range: Sequence[int], flip_prob: float, process_index: int = 0,
               process_count: int = 1, num_threads: int = 4, prefetch: int = 2):
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
      num_threads: loading threads.
      prefetch: batches loading ahead.
    """
    self._records = records
    self._landscape = np.array([r.landscape for r in records])
    self._sampler = GroupedSampler(self._landscape, global_batch, seed)
    self._slice = _process_slice(global_batch, process_index, process_count)
    self._long_side = max(scale)
    self._short_side_range = tuple(short_side_range)
    self._flip_prob = flip_prob
    self._loader = _Loader(records, image_size, max_boxes, num_threads)
    self._prefetch = prefetch
    self._pending = collections.deque()
    self._sampled = (-1, None)  # (epoch, its global batches), the epoch last sampled
    self.epoch, self.step = 0, 0  # position of the next batch to yield
    self._queued = (0, 0)  # position of the next batch to start loading

  @property
  def batches_per_epoch(self) -> int:
    return self._sampler.batches_per_epoch

  def _following(self, position: tuple[int, int]) -> tuple[int, int]:
    epoch, step = position
    return (epoch, step + 1) if step + 1 < self.batches_per_epoch else (epoch + 1, 0)

  def _start(self, epoch: int, step: int):
    if self._sampled[0] != epoch:
      self._sampled = (epoch, self._sampler.epoch(epoch))
    indices = self._sampled[1][step]
    examples = []
    for index in indices[self._slice]:
      short, flip = augmentation(self._sampler.seed, epoch, int(index),
                                 self._short_side_range, self._flip_prob)
      examples.append(_Example(int(index), (self._long_side, short), flip))
    return self._loader.start(examples, bool(self._landscape[indices[0]]))

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    while len(self._pending) < self._prefetch:
      self._pending.append(self._start(*self._queued))
      self._queued = self._following(self._queued)
    batch = self._loader.finish(self._pending.popleft())
    self.epoch, self.step = self._following((self.epoch, self.step))
    return batch

  def get_state(self) -> dict[str, int]:
    """The position of the next batch, and what it is valid for; json-serialisable."""
    return {'epoch': self.epoch, 'step': self.step, 'seed': self._sampler.seed,
            'num_examples': len(self._records), 'global_batch': self._sampler.global_batch}

  def set_state(self, state: dict[str, int]) -> None:
    """Moves to a position saved by ``get_state``, for the same data, seed and batch size."""
    expected = self.get_state()
    for key in ('seed', 'num_examples', 'global_batch'):
      if state[key] != expected[key]:
        raise ValueError(f'iterator state is for {key}={state[key]}, this iterator has '
                         f'{expected[key]}')
    while self._pending:
      self._loader.cancel(self._pending.popleft())
    self.epoch, self.step = int(state['epoch']), int(state['step'])
    self._queued = (self.epoch, self.step)

  def close(self) -> None:
    """Stops the loading threads."""
    self._loader.close()


class EvalIterator:
  """One pass over every example exactly once, in a fixed order, for evaluation.

  Landscape images come first, then portrait ones, each in dataset order; each group's last
  global batch is filled with padding examples (``real`` False, zero image, no boxes).
  Iterating again starts a new pass.
  """

  def __init__(self, records: Sequence[records_lib.Record], *, image_size: Sequence[int],
               max_boxes: int, global_batch: int, scale: Sequence[int], process_index: int = 0,
               process_count: int = 1, num_threads: int = 4, prefetch: int = 2):
    """Plans the batches; loading starts when iteration does.

    Args:
      records: the dataset.
      image_size: ``data.image_size``, padded (height, width) of landscape batches.
      max_boxes: ``data.max_boxes``, box slots per image.
      global_batch: examples per step over all processes.
      scale: ``data.scale``, (long, short) bound of the resized images.
      process_index: this process.
      process_count: number of processes; each loads ``global_batch / process_count``.
      num_threads: loading threads.
      prefetch: batches loading ahead.
    """
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
    self._records = records
    self._args = (image_size, max_boxes, num_threads)
    self._prefetch = prefetch

  def __len__(self) -> int:
    return len(self._batches)

  def __iter__(self) -> Iterator[Batch]:
    loader = _Loader(self._records, *self._args)
    try:
      pending = collections.deque()
      for examples, is_landscape in self._batches:
        pending.append(loader.start(examples, is_landscape))
        if len(pending) == self._prefetch:
          yield loader.finish(pending.popleft())
      while pending:
        yield loader.finish(pending.popleft())
    finally:
      loader.close()
