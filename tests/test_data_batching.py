"""Batching: orientation groups, determinism, per-process slices, exact resume, eval coverage,
loading in worker processes, and a bad image stopping a worker's load with the file's name."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dla_jax import errors
from dla_jax.data import batching
from dla_jax.data import image_annotations
from dla_jax.data import prefetch

IMAGE_SIZE = (24, 32)  # padded (height, width) of landscape images


@pytest.fixture(name='records', scope='module')
def _records(tmp_path_factory):
  """23 small images, 15 landscape and 8 portrait, each with one box and its own colour."""
  folder = tmp_path_factory.mktemp('images')
  records = []
  for i in range(23):
    h, w = (18, 30) if i % 3 else (30, 20)
    path = folder / f'{i}.png'
    Image.new('RGB', (w, h), (i * 10, 0, 0)).save(path)
    records.append(image_annotations.Record(
        image_id=100 + i, path=str(path), height=h, width=w,
        boxes=np.array([[1, 2, 1 + w / 2, 2 + h / 2]], np.float32),
        labels=np.array([i % 4], np.int32)))
  return records


def _train(records, **overrides):
  kwargs = dict(image_size=IMAGE_SIZE, max_boxes=3, global_batch=4, seed=0, scale=(32, 24),
                short_side_range=(12, 24), flip_prob=0.5, num_threads=2)
  return batching.TrainIterator(records, **{**kwargs, **overrides})


def _take(iterator, n):
  batches = [next(iterator) for _ in range(n)]
  iterator.close()
  return batches


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_every_global_batch_has_one_orientation_so_exactly_two_shapes(records):
  iterator = _train(records)
  batches = _take(iterator, 2 * iterator.batches_per_epoch)
  assert {b['images'].shape for b in batches} == {(4, 24, 32, 3), (4, 32, 24, 3)}
  for b in batches:
    landscape = b['image_hw'][:, 1] >= b['image_hw'][:, 0]
    assert landscape.all() == (b['images'].shape[2] == 32) and len(set(landscape)) == 1


def test_an_epoch_covers_every_example_and_tops_groups_up_to_whole_batches(records):
  sampler = batching.GroupedSampler(np.array([r.landscape for r in records]), 4, seed=3)
  epoch = sampler.epoch(0)
  assert epoch.shape == (sampler.batches_per_epoch, 4) == (4 + 2, 4)  # 15 -> 16, 8 -> 8
  assert set(epoch.ravel()) == set(range(23))
  assert not np.array_equal(epoch, sampler.epoch(1))


@pytest.mark.parametrize('workers,threads', [(0, 0), (0, 1), (2, 1)])
def test_same_seed_gives_the_same_batches_whatever_the_workers_and_threads(
    records, workers, threads):
  for a, b in zip(_take(_train(records, num_workers=workers, num_threads=threads), 8),
                  _take(_train(records), 8)):
    _assert_same(a, b)
  other = _take(_train(records, seed=1), 8)
  assert any(not np.array_equal(a['image_id'], b['image_id'])
             for a, b in zip(_take(_train(records), 8), other))


def test_augmentation_flips_and_jitters_within_the_configured_range(records):
  batches = _take(_train(records, flip_prob=0.5), 12)
  short = np.concatenate([b['image_hw'].min(axis=1) for b in batches])
  assert short.min() >= 12 and short.max() <= 24 and len(set(short)) > 3
  flips = [batching.augmentation(0, 0, i, (12, 24), 0.5)[1] for i in range(50)]
  assert 10 < sum(flips) < 40


def test_processes_take_contiguous_slices_of_the_same_global_batch(records):
  whole = _take(_train(records), 6)
  halves = [_take(_train(records, process_index=p, process_count=2), 6) for p in range(2)]
  for g, a, b in zip(whole, *halves):
    _assert_same(g, {k: np.concatenate([a[k], b[k]]) for k in g})


def test_restored_iterator_yields_exactly_the_batches_it_would_have(records):
  iterator = _train(records)
  for _ in range(9):  # into the second epoch
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))
  assert (state['epoch'], state['step']) == (1, 3)
  expected = [next(iterator) for _ in range(5)]
  iterator.close()
  restored = _train(records)
  next(restored)
  restored.set_state(state)
  for a, b in zip(expected, _take(restored, 5)):
    _assert_same(a, b)


@pytest.mark.slow
def test_state_saved_with_in_process_loading_resumes_in_worker_processes(records):
  iterator = _train(records)
  for _ in range(7):
    next(iterator)
  state = iterator.get_state()
  expected = _take(iterator, 3)
  restored = _train(records, num_workers=2, num_threads=1)
  next(restored)  # workers started at position 0, then moved
  restored.set_state(state)
  assert restored.get_state() == state
  for a, b in zip(expected, _take(restored, 3)):
    _assert_same(a, b)


@pytest.mark.parametrize('workers', [0, 1])
def test_a_corrupt_image_stops_loading_with_the_file_name(records, tmp_path, workers):
  bad = tmp_path / 'corrupt.jpg'
  bad.write_bytes(b'\xff\xd8 not a jpeg')
  broken = list(records)
  broken[5] = image_annotations.Record(image_id=5, path=str(bad), height=18, width=30,
                                 boxes=records[5].boxes, labels=records[5].labels)
  iterator = _train(broken, num_workers=workers, num_threads=1)
  with pytest.raises(errors.DataError, match='corrupt.jpg: cannot read image 5'):
    for _ in range(iterator.batches_per_epoch):
      next(iterator)
  iterator.close()


def test_the_pixel_limit_reaches_the_worker_processes(records):
  """Each image here is past twice 100 pixels: refused, naming it, in a worker process (the
  reader carries the limit there; Pillow's is a process-wide setting, so this process's is
  left alone)."""
  iterator = _train(records, num_workers=1, num_threads=1,
                    reader=image_annotations.FileReader(max_pixels=100))
  with pytest.raises(errors.DataError, match=r'cannot read image \d+: .*decompression bomb.*; for '
                     'real images this large, raise data.max_image_pixels'):
    next(iterator)
  iterator.close()


def test_a_missing_image_stops_evaluation_with_the_file_name(records, tmp_path):
  broken = list(records)
  broken[0] = image_annotations.Record(image_id=0, path=str(tmp_path / 'gone.png'), height=30,
                                 width=20, boxes=records[0].boxes, labels=records[0].labels)
  iterator = batching.EvalIterator(broken, image_size=IMAGE_SIZE, max_boxes=3, global_batch=4,
                                   scale=(32, 24), num_workers=2, num_threads=1)
  with pytest.raises(errors.DataError, match='gone.png: cannot read image 0'):
    list(iterator)


def test_state_of_another_seed_is_refused(records):
  state = _train(records).get_state()
  other = _train(records, seed=5)
  with pytest.raises(ValueError, match='seed=0'):
    other.set_state(state)
  other.close()


@pytest.mark.parametrize('process_count,workers', [(1, 0), (2, 0), (1, 2)])
def test_eval_yields_every_example_once_and_marks_padding_not_real(records, process_count,
                                                                   workers):
  seen = []
  for p in range(process_count):
    iterator = batching.EvalIterator(records, image_size=IMAGE_SIZE, max_boxes=3, global_batch=4,
                                     scale=(32, 24), process_index=p, process_count=process_count,
                                     num_workers=workers)
    batches = list(iterator)
    assert len(batches) == len(iterator) == 4 + 2
    for b in batches:
      assert b['images'].shape[0] == 4 // process_count
      assert not b['images'][~b['real']].any() and not b['valid'][~b['real']].any()
      seen.extend(b['image_id'][b['real']])
  assert sorted(seen) == [r.image_id for r in records]


def test_device_prefetch_state_follows_the_batches_consumed(records):
  mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  iterator = _train(records)
  device = prefetch.prefetch_to_device(iterator, sharding, size=2)
  first = next(device)
  assert isinstance(first['images'], jax.Array) and first['images'].shape[0] == 4
  state = device.get_state()
  assert (state['epoch'], state['step']) == (0, 1) and iterator.get_state()['step'] == 1 + 2
  second = next(device)
  iterator.close()
  restored = _train(records)
  restored.set_state(state)
  _assert_same({k: np.asarray(v) for k, v in second.items() if k != 'image_id'},
               {k: v for k, v in _take(restored, 1)[0].items() if k != 'image_id'})
