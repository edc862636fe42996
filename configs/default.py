"""Defaults shared by every experiment: DLA with ResNet-50-FPN on COCO, the paper's 1x recipe.

The recipe is MMDetection v2's ATSS 1x, which the paper keeps unchanged ("all the training
hyper-parameters are kept unchanged"): configs/atss/atss_r50_fpn_1x_coco.py and its bases
configs/_base_/schedules/schedule_1x.py, datasets/coco_detection.py. Where a field follows one of
them, its comment names it.

Experiment configs start from this one and change a few fields. Every field can be overridden
from the command line, e.g. ``--config.optim.base_lr=0.02``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.model = model = ml_collections.ConfigDict()
  # resnet18/34/50/101, resnext101_32x4d, resnext101_64x4d (torchvision layouts).
  model.backbone = 'resnet50'
  # Channels of the stem and first stage; 64 is the torchvision network, smaller values give
  # narrow networks for tiny experiments (the other stages scale with it).
  model.backbone_width = 64
  # Stem and stage 1 get no update and no weight decay (MMDetection's frozen_stages=1);
  # 0 freezes the stem only, -1 nothing.
  model.frozen_stages = 1
  # ImageNet-initialised backbones: 'bn_eval' (BatchNorm statistics constant, affine scale and
  # bias trained outside the frozen stages: the ATSS config's norm_cfg=dict(type='BN',
  # requires_grad=True), norm_eval=True) or 'frozen_bn' (all of BatchNorm constant, as
  # torchvision's detectors). From scratch: 'group_norm' (trainable GroupNorm, model.gn_groups).
  model.backbone_norm = 'bn_eval'
  # Folder written by `dla-import-torchvision` (orbax); '' trains the backbone from scratch.
  model.backbone_init = ''
  model.fpn_channels = 256
  # P7 = conv(P6), no ReLU between: the ATSS config's FPN(add_extra_convs='on_output') leaves
  # relu_before_extra_convs at False. True is the ATSS authors' own code and the FCOS config.
  model.fpn_relu_before_p7 = False
  # 'dla' (the paper: metric branch, DLA's losses) or 'atss' (the baseline: centerness branch on
  # the regression tower, ATSS's losses). See models/head.py and losses.py.
  model.head = 'dla'
  model.head_channels = 256
  model.head_convs = 4
  model.gn_groups = 32
  # Channels of the metric branch's 1x1 reduce conv (paper, section 3.3; model.head='dla').
  model.metric_channels = 256
  # 'point' (anchor-free: l, t, r, b distances in strides) or 'anchor' (deltas on one square
  # anchor per location); the paper reports both.
  model.prior = 'point'
  model.anchor_scale = 8.0
  # Initial foreground probability of the class logits (RetinaNet/ATSS bias init).
  model.prior_prob = 0.01
  # Compute dtype: 'float32', 'bfloat16' or 'auto' (bfloat16 on GPU and TPU, float32 on the CPU).
  # Parameters, GroupNorm statistics, the head's outputs, decoding, the assigner and the losses
  # stay float32 either way. On the shapes data bfloat16 matched float32's AP over 3 seeds
  # (docs/reproduction.md, "Float32 and bfloat16").
  model.dtype = 'auto'
  # XLA:CPU's speed work (dla_jax/cpu): 'auto' (on the CPU, Winograd F(4x4, 3x3) for float32 3x3
  # stride-1 convs and matmul kernel gradients for other wide ones, where each pays, and fusion
  # barriers), 'winograd', 'matmul', or 'xla' (none of it: the graph GPU and TPU run). GPU and TPU
  # run that graph whatever this says. The same values either way, within float32 rounding.
  model.conv_impl = 'auto'

  config.data = data = ml_collections.ConfigDict()
  # 'shapes' (built-in synthetic data), 'coco_json' (image folder + instances json) or 'tfds'.
  data.source = 'coco_json'
  # Cache root for generated shapes data and TFDS exports; '' is ~/.cache/dla_jax.
  data.cache_dir = ''
  # Relative paths of the coco_json and tfds sources are relative to this folder; a relative
  # root is relative to the working directory.
  data.root = 'data'
  data.train_images = 'coco/train2017'
  data.train_annotations = 'coco/annotations/instances_train2017.json'
  data.val_images = 'coco/val2017'
  data.val_annotations = 'coco/annotations/instances_val2017.json'
  # TFDS: a dataset the user prepared in tfds_data_dir ('' is TFDS's default folder).
  data.tfds_name = 'coco/2017'
  data.tfds_data_dir = ''
  data.tfds_train_split = 'train'
  data.tfds_val_split = 'validation'
  # 'data_source': a split prepared as ArrayRecord, read with random access and no TensorFlow;
  # 'export': any prepared split, its images exported once to the cache (data/tfds_coco.py).
  data.tfds_read = 'data_source'
  # Synthetic shapes (source 'shapes'): number of images and the generator's own seed.
  data.shapes_train_size = 4000
  data.shapes_val_size = 500
  data.shapes_seed = 0
  data.num_classes = 80
  # Padded input (height, width) of landscape images; portrait images use the transpose.
  data.image_size = (800, 1344)
  # Resize bound (long side, short side), keeping the aspect ratio; evaluation uses it as is.
  data.scale = (1333, 800)
  # Training short side, sampled uniformly in this range (multi-scale training of the 2x recipe).
  data.short_side_range = (800, 800)
  data.flip_prob = 0.5
  data.max_boxes = 100
  # Pillow's decompression-bomb guard (Image.MAX_IMAGE_PIXELS): images of more than twice this
  # many pixels are refused, naming the file. 0 keeps Pillow's 89,478,485; raise it for real
  # images that large.
  data.max_image_pixels = 0
  # Training skips images without annotations (MMDetection's CocoDataset filter_empty_gt=True);
  # evaluation keeps every image.
  data.filter_empty_gt = True
  # Batches load in worker processes (data/loading.py): -1 is one per core but two, at most 32;
  # 0 loads in the training process itself (for debugging).
  data.num_workers = -1
  # Loading threads per loading process, each with one batch in flight (0: none, load on
  # demand).
  data.num_threads = 2

  config.assigner = assigner = ml_collections.ConfigDict()
  # 'dla' (the paper) or 'atss' (the baseline's assigner: alpha = 1 and s = 0, so m = IoU_prior).
  assigner.name = 'dla'
  # Candidates per FPN level: the paper's k = 10 (ATSS: 9).
  assigner.topk = 10
  # Regression weight w = m ** gamma (eq. 5), which weights the GIoU loss (eq. 6).
  assigner.gamma = 1.0
  # Alpha schedule (eq. 2): alpha = (1 - alpha0) * exp(-t / sqrt(T)) + alpha0.
  # 'epoch': t counts whole epochs (the paper); 'continuous': t is fractional; 'fixed': alpha is
  # fixed_alpha throughout (Table 2's ablation).
  assigner.alpha_schedule = 'epoch'
  assigner.alpha0 = 0.9
  assigner.fixed_alpha = 0.9

  config.loss = loss = ml_collections.ConfigDict()
  # Eq. 8: L = cls_weight * L_cls + reg_weight * L_reg + quality_weight * L_quality, L_quality
  # the metric loss (eq. 7) or ATSS's centerness loss; ATSS's weights are the same 1, 2, 1.
  loss.cls_weight = 1.0
  loss.reg_weight = 2.0
  loss.quality_weight = 1.0
  loss.focal_alpha = 0.25
  loss.focal_gamma = 2.0
  # Exponent of the metric loss's modulating factor (eq. 7).
  loss.metric_beta = 2.0

  config.inference = inference = ml_collections.ConfigDict()
  # ATSS's test settings.
  inference.pre_nms_topk = 1000
  inference.score_threshold = 0.05
  inference.nms_iou = 0.6
  inference.max_detections = 100
  # 'cls_x_quality' (class score x sigmoid of the quality branch: metric or centerness) or
  # 'quality' (the quality branch alone ranks boxes).
  inference.ranking = 'cls_x_quality'

  config.evaluation = evaluation = ml_collections.ConfigDict()
  # The 12 COCO numbers from 'pycocotools' (the reference) or 'faster_coco_eval' (the fast-eval
  # extra: the same numbers, faster; docs/performance.md).
  evaluation.backend = 'pycocotools'

  config.optim = optim = ml_collections.ConfigDict()
  # SGD, lr 0.01 per 16 images scaled linearly with the global batch; linear warm-up over 500
  # iterations from 0.001 of it; x0.1 at epochs 8 and 11 of 12 (schedule_1x.py).
  # 'sgd' or 'adamw' (momentum is SGD's only).
  optim.name = 'sgd'
  optim.base_lr = 0.01
  optim.base_batch = 16
  optim.momentum = 0.9
  optim.weight_decay = 1e-4
  optim.warmup_steps = 500
  optim.warmup_ratio = 0.001
  optim.epochs = 12
  optim.decay_epochs = (8, 11)
  optim.decay_factor = 0.1

  config.train = train = ml_collections.ConfigDict()
  train.global_batch = 16
  # Images per evaluation batch (a multiple of the device count).
  train.eval_batch = 16
  train.seed = 0
  train.log_every = 50
  # Evaluate on the val split every this many epochs during training (0: only at the end).
  train.eval_every_epochs = 0
  train.checkpoint_every = 2000
  # Stop after this step (checkpointed) with the whole run's schedule unchanged, so that a run
  # split into parts (time-limited hosts, a quick look at the first steps) trains exactly as in
  # one go: a later command with a later stop, or 0 (to the end), resumes there.
  train.stop_at_step = 0
  train.keep_checkpoints = 3
  # Stop at start-up when JAX would compute on the CPU (an accelerator build of JAX missing, or
  # no usable device): on for COCO, off for the CPU-sized shapes configs.
  train.require_accelerator = True
  # JAX's persistent compilation cache: a resumed or repeated run loads the compiled steps
  # instead of compiling them again; '' keeps it in $JAX_COMPILATION_CACHE_DIR when that is
  # set, else in <workdir>/compilation_cache.
  train.compilation_cache = True
  train.compilation_cache_dir = ''
  return config
