"""COCO json source: label mapping, crowd and degenerate boxes, and errors that name the file."""

import json

import numpy as np
import pytest
from PIL import Image

from dla_jax.configs import default
from dla_jax import errors
from dla_jax.data import batching
from dla_jax.data import coco_json
from dla_jax.data import pipeline


def _write(tmp_path, annotations, images=None, categories=None):
  """Writes a json of 2 images of 40 x 30 (w x h) and their PNG files; returns (folder, json)."""
  images = images or [{'id': 10, 'file_name': 'a.png', 'height': 30, 'width': 40},
                      {'id': 4, 'file_name': 'b.png', 'height': 30, 'width': 40}]
  categories = categories or [{'id': 90, 'name': 'z'}, {'id': 2, 'name': 'x'},
                              {'id': 7, 'name': 'y'}]
  for image in images:
    Image.new('RGB', (40, 30), (90, 90, 90)).save(tmp_path / image['file_name'])
  path = tmp_path / 'instances.json'
  path.write_text(json.dumps(
      {'images': images, 'annotations': annotations, 'categories': categories}))
  return str(tmp_path), str(path)


def _ann(ann_id, image_id, category_id, bbox, **extra):
  return {'id': ann_id, 'image_id': image_id, 'category_id': category_id, 'bbox': bbox, **extra}


def _write_edited(tmp_path, edit, annotations=()):
  """Writes the files of ``_write`` with ``annotations``, then ``edit(data)`` on the json."""
  images_dir, path = _write(tmp_path, list(annotations))
  with open(path) as f:
    data = json.load(f)
  edit(data)
  with open(path, 'w') as f:
    json.dump(data, f)
  return images_dir, path


def test_category_ids_map_to_contiguous_labels_and_back(tmp_path):
  anns = [_ann(1, 10, 90, [0, 0, 5, 5]), _ann(2, 10, 2, [1, 1, 5, 5]),
          _ann(3, 4, 7, [2, 2, 5, 5])]
  dataset = coco_json.load(*_write(tmp_path, anns))
  np.testing.assert_array_equal(dataset.category_ids, [2, 7, 90])
  assert dataset.category_names == ('x', 'y', 'z')
  by_id = {r.image_id: r for r in dataset.records}
  assert [r.image_id for r in dataset.records] == [4, 10]
  np.testing.assert_array_equal(dataset.category_ids[by_id[10].labels], [90, 2])
  np.testing.assert_array_equal(dataset.category_ids[by_id[4].labels], [7])


def test_crowd_boxes_are_not_targets_but_stay_in_the_evaluation_ground_truth(tmp_path):
  anns = [_ann(1, 10, 2, [0, 0, 5, 5], iscrowd=0), _ann(2, 10, 2, [5, 5, 20, 20], iscrowd=1)]
  dataset = coco_json.load(*_write(tmp_path, anns))
  record = dataset.records[1]
  np.testing.assert_array_equal(record.boxes, [[0, 0, 5, 5]])
  crowd = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[10], iscrowd=True))
  assert [a['id'] for a in crowd] == [2]
  assert len(dataset.coco.getAnnIds(imgIds=[10])) == 2


def test_boxes_under_one_pixel_or_outside_the_image_are_dropped_and_counted(tmp_path, capsys):
  anns = [_ann(1, 10, 2, [0, 0, 0.5, 5]),  # under 1 px wide
          _ann(2, 10, 2, [3, 3, 4, 0]),  # zero high
          _ann(3, 10, 2, [39.5, 3, 10, 10]),  # 0.5 px wide once clipped
          _ann(4, 10, 2, [-5, 28, 10, 10]),  # clipped to (0, 28, 5, 30)
          _ann(5, 10, 2, [50, 3, 10, 10])]  # entirely outside
  dataset = coco_json.load(*_write(tmp_path, anns))
  np.testing.assert_array_equal(dataset.records[1].boxes, [[0, 28, 5, 30]])
  out = capsys.readouterr().out
  assert 'dropped 2 boxes under 1 px and 2 boxes under 1 px once clipped' in out
  assert 'instances.json' in out


def test_annotations_without_iscrowd_or_area_get_coco_defaults(tmp_path):
  dataset = coco_json.load(*_write(tmp_path, [_ann(1, 10, 2, [0, 0, 4, 5])]))
  assert dataset.coco.anns[1]['iscrowd'] == 0 and dataset.coco.anns[1]['area'] == 20


@pytest.mark.parametrize('section, field', [
    ('images', 'file_name'), ('images', 'height'), ('annotations', 'bbox'),
    ('annotations', 'category_id'), ('categories', 'id')])
def test_missing_field_error_names_the_json_and_the_field(tmp_path, section, field):
  files = _write_edited(tmp_path, lambda data: data[section][0].pop(field),
                        [_ann(1, 10, 2, [0, 0, 5, 5])])
  with pytest.raises(errors.DataError, match=rf'instances\.json: {section}\[0\] .*"{field}"'):
    coco_json.load(*files)


def test_missing_section_or_broken_json_names_the_file(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text('{"images": [], "categories": []}')
  with pytest.raises(errors.DataError, match=r'bad\.json: missing field "annotations"'):
    coco_json.load(str(tmp_path), str(path))
  path.write_text('{"images": [')
  with pytest.raises(errors.DataError, match=r'bad\.json: cannot read annotations'):
    coco_json.load(str(tmp_path), str(path))


def test_unknown_category_id_names_the_json_and_the_annotation(tmp_path):
  with pytest.raises(errors.DataError, match=r'instances\.json: annotation 1 .* 5'):
    coco_json.load(*_write(tmp_path, [_ann(1, 10, 5, [0, 0, 5, 5])]))


@pytest.mark.parametrize('section', ['images', 'annotations', 'categories'])
def test_section_that_is_not_a_list_names_the_json_and_the_section(tmp_path, section):
  files = _write_edited(tmp_path, lambda data: data.update({section: {'0': {'id': 1}}}))
  with pytest.raises(errors.DataError, match=rf'instances\.json: "{section}" is not a list'):
    coco_json.load(*files)


def test_entry_that_is_not_an_object_names_the_json_and_the_index(tmp_path):
  files = _write_edited(tmp_path, lambda data: data['images'].append('c.png'))
  with pytest.raises(errors.DataError, match=r'instances\.json: images\[2\] is not a json object'):
    coco_json.load(*files)


def test_json_without_images_is_rejected(tmp_path):
  files = _write_edited(tmp_path, lambda data: data.update(images=[]))
  with pytest.raises(errors.DataError, match=r'instances\.json: has no images'):
    coco_json.load(*files)


def test_repeated_image_id_is_reported_as_such_not_as_an_unknown_image(tmp_path):
  files = _write_edited(tmp_path, lambda data: data['images'][1].update(id=10),
                        [_ann(1, 4, 2, [0, 0, 5, 5])])
  with pytest.raises(errors.DataError, match=r'instances\.json: repeated image id 10 '
                                             r'\(images\[0\] and images\[1\]\)'):
    coco_json.load(*files)


@pytest.mark.parametrize('image_id', [2**31, -2**31 - 1, 10.0, '10', True, None])
def test_image_id_that_is_not_an_int32_is_rejected(tmp_path, image_id):
  files = _write_edited(tmp_path, lambda data: data['images'][0].update(id=image_id))
  with pytest.raises(errors.DataError, match=r'instances\.json: images\[0\] id .* int32 range'):
    coco_json.load(*files)


def test_image_ids_at_the_int32_limits_load(tmp_path):
  def edit(data):
    data['images'][0]['id'], data['images'][1]['id'] = 2**31 - 1, -2**31
  dataset = coco_json.load(*_write_edited(tmp_path, edit))
  assert [r.image_id for r in dataset.records] == [-2**31, 2**31 - 1]


@pytest.mark.parametrize('side, value', [('height', 0), ('height', -30), ('width', 40.0),
                                         ('width', '40'), ('height', None)])
def test_image_size_that_is_not_a_positive_integer_names_the_image(tmp_path, side, value):
  files = _write_edited(tmp_path, lambda data: data['images'][0].update({side: value}))
  with pytest.raises(errors.DataError,
                     match=rf'instances\.json: image 10 {side} .* is not a positive integer'):
    coco_json.load(*files)


@pytest.mark.parametrize('file_name', [None, 5, ['a.png'], ''])
def test_file_name_that_is_not_a_string_names_the_image(tmp_path, file_name):
  files = _write_edited(tmp_path, lambda data: data['images'][1].update(file_name=file_name))
  with pytest.raises(errors.DataError,
                     match=r'instances\.json: image 4 file_name .* is not a non-empty string'):
    coco_json.load(*files)


@pytest.mark.parametrize('category_id', ['2', 2.0, None])
def test_category_id_that_is_not_an_integer_names_the_index(tmp_path, category_id):
  files = _write_edited(tmp_path, lambda data: data['categories'][1].update(id=category_id))
  with pytest.raises(errors.DataError,
                     match=r'instances\.json: categories\[1\] id .* is not an integer'):
    coco_json.load(*files)


def test_repeated_category_id_names_it(tmp_path):
  files = _write_edited(tmp_path, lambda data: data['categories'][2].update(id=90))
  with pytest.raises(errors.DataError, match=r'instances\.json: repeated category id 90'):
    coco_json.load(*files)


@pytest.mark.parametrize('field, value', [('image_id', '10'), ('image_id', [10]),
                                          ('category_id', '2'), ('category_id', {'id': 2})])
def test_reference_that_is_not_an_integer_id_is_unknown(tmp_path, field, value):
  ann = {**_ann(1, 10, 2, [0, 0, 5, 5]), field: value}
  with pytest.raises(errors.DataError,
                     match=rf'instances\.json: annotation 1 has unknown {field} '):
    coco_json.load(*_write(tmp_path, [ann]))


@pytest.mark.parametrize('ann_id', [0, -1, 1.5, '1', None])
def test_annotation_id_that_is_not_a_positive_integer_is_rejected(tmp_path, ann_id):
  # pycocotools' evaluation reads a match to ground truth id 0 as no match.
  anns = [_ann(1, 10, 2, [0, 0, 5, 5]), _ann(ann_id, 4, 2, [0, 0, 5, 5])]
  with pytest.raises(errors.DataError,
                     match=r'instances\.json: annotations\[1\] id .* is not a positive integer'):
    coco_json.load(*_write(tmp_path, anns))


def test_repeated_annotation_id_is_rejected(tmp_path):
  anns = [_ann(1, 10, 2, [0, 0, 5, 5]), _ann(2, 10, 2, [1, 1, 5, 5]), _ann(1, 4, 2, [0, 0, 5, 5])]
  with pytest.raises(errors.DataError, match=r'instances\.json: repeated annotation id 1'):
    coco_json.load(*_write(tmp_path, anns))


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf'), 1e39, None, '5',
                                   True])
def test_box_coordinate_that_is_not_a_finite_number_names_the_annotation(tmp_path, value):
  anns = [_ann(1, 10, 2, [0, 0, 5, 5]), _ann(7, 10, 2, [0, 0, value, 5])]
  with pytest.raises(errors.DataError, match=r'instances\.json: annotation 7 bbox .* is not '
                                             r'\[x, y, width, height\] of finite numbers'):
    coco_json.load(*_write(tmp_path, anns))


@pytest.mark.parametrize('bbox', [[0, 0, 5], [0, 0, 5, 5, 1], [[0, 0], [5, 5]], '0 0 5 5',
                                  {'x': 0, 'y': 0, 'w': 5, 'h': 5}, None])
def test_box_that_is_not_four_numbers_names_the_annotation(tmp_path, bbox):
  with pytest.raises(errors.DataError, match=r'instances\.json: annotation 7 bbox .* is not '
                                             r'\[x, y, width, height\] of finite numbers'):
    coco_json.load(*_write(tmp_path, [_ann(7, 10, 2, bbox)]))


@pytest.mark.parametrize('iscrowd', ['0', 2, None, [1]])
def test_iscrowd_other_than_0_or_1_names_the_annotation(tmp_path, iscrowd):
  with pytest.raises(errors.DataError,
                     match=r'instances\.json: annotation 3 iscrowd .* is not 0 or 1'):
    coco_json.load(*_write(tmp_path, [_ann(3, 10, 2, [0, 0, 5, 5], iscrowd=iscrowd)]))


@pytest.mark.parametrize('area', ['25', None, float('nan')])
def test_area_that_is_not_a_finite_number_names_the_annotation(tmp_path, area):
  # pycocotools compares areas with the small/medium/large ranges only when evaluating.
  with pytest.raises(errors.DataError,
                     match=r'instances\.json: annotation 3 area .* is not a finite number'):
    coco_json.load(*_write(tmp_path, [_ann(3, 10, 2, [0, 0, 5, 5], area=area)]))


def _first_batch(dataset):
  iterator = batching.EvalIterator(dataset.records, image_size=(32, 48), max_boxes=2,
                                   global_batch=2, scale=(48, 32), num_threads=1)
  return next(iter(iterator))


@pytest.mark.parametrize('content', [b'', b'\x89PNG\r\n\x1a\n not really a png'])
def test_corrupt_image_error_names_the_image_file(tmp_path, content):
  dataset = coco_json.load(*_write(tmp_path, []))
  (tmp_path / 'b.png').write_bytes(content)
  with pytest.raises(errors.DataError, match=r'b\.png: cannot read image 4'):
    _first_batch(dataset)


def test_missing_image_file_error_names_it(tmp_path):
  dataset = coco_json.load(*_write(tmp_path, []))
  (tmp_path / 'a.png').unlink()
  with pytest.raises(errors.DataError, match=r'a\.png: cannot read image 10'):
    _first_batch(dataset)


def test_image_of_another_size_than_annotated_names_the_file(tmp_path):
  dataset = coco_json.load(*_write(tmp_path, []))
  Image.new('RGB', (30, 40)).save(tmp_path / 'a.png')
  with pytest.raises(errors.DataError, match=r'a\.png: image is 30x40 .* say 40x30'):
    _first_batch(dataset)


def test_images_with_more_boxes_than_slots_keep_the_largest_and_warn(tmp_path, capsys):
  anns = [_ann(i, 10, 2, [0, 0, size, size]) for i, size in enumerate([2, 9, 4, 3], start=1)]
  images_dir, path = _write(tmp_path, anns)
  config = default.get_config()
  data = config.data
  data.source, data.num_classes, data.max_boxes = 'coco_json', 3, 2
  data.train_images, data.train_annotations = images_dir, path
  data.image_size, data.scale, data.short_side_range = (32, 48), (48, 32), (32, 32)
  data.flip_prob, data.num_threads = 0.0, 1
  config.train.global_batch = 1
  iterator = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  out = capsys.readouterr().out
  assert '1 images have more than data.max_boxes=2 boxes' in out
  assert '2 boxes are dropped' in out
  batch = next(b for b in iterator if b['image_id'][0] == 10)
  iterator.close()
  sy, sx = batch['scale'][0]
  np.testing.assert_allclose(batch['boxes'][0], [[0, 0, 9 * sx, 9 * sy], [0, 0, 4 * sx, 4 * sy]],
                             rtol=1e-6)
  np.testing.assert_array_equal(batch['valid'][0], [True, True])


def _three_images(tmp_path):
  """Image 10 with a box, image 4 with a crowd region only, image 6 with no annotation."""
  images = [{'id': 10, 'file_name': 'a.png', 'height': 30, 'width': 40},
            {'id': 4, 'file_name': 'b.png', 'height': 30, 'width': 40},
            {'id': 6, 'file_name': 'c.png', 'height': 30, 'width': 40}]
  anns = [_ann(1, 10, 2, [0, 0, 5, 5]), _ann(2, 4, 2, [5, 5, 20, 20], iscrowd=1)]
  images_dir, path = _write(tmp_path, anns, images)
  config = default.get_config()
  config.data.num_classes = 3
  config.data.source = 'coco_json'
  config.data.train_images = config.data.val_images = images_dir
  config.data.train_annotations = config.data.val_annotations = path
  return config


def test_training_skips_images_without_annotations_as_mmdetection_but_evaluation_keeps_them(
    tmp_path):
  config = _three_images(tmp_path)
  assert config.data.filter_empty_gt  # the COCO recipe's default
  dataset = pipeline.load_dataset(config, 'train')
  # MMDetection's filter_empty_gt keeps an image with any annotation, a crowd one included.
  assert [r.image_id for r in pipeline.train_records(config, dataset)] == [4, 10]
  _, val = pipeline.make_eval_iterator(config, global_batch=2, process_index=0, process_count=1)
  assert sorted(r.image_id for r in val.records) == [4, 6, 10]
  config.data.filter_empty_gt = False
  assert [r.image_id for r in pipeline.train_records(config, dataset)] == [4, 6, 10]


def test_training_set_without_any_annotation_names_the_json(tmp_path):
  images_dir, path = _write(tmp_path, [])
  config = default.get_config()
  config.data.num_classes = 3
  dataset = coco_json.load(images_dir, path)
  with pytest.raises(errors.DataError, match=r'instances\.json: no image has an annotation'):
    pipeline.train_records(config, dataset)
