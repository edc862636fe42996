"""Command-line tools beside training: weight import, model summary, benchmarks, step cost."""
