"""Input pipeline: synthetic shapes, COCO json and TFDS COCO sources in fixed-shape batches."""
