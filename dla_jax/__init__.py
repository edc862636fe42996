"""dla-jax: one-stage object detection with Dynamic Label Assignment, in JAX and Flax."""
