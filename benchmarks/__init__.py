"""Speed benchmarks: `python -m benchmarks.bench --help` (TensorFlow), `python -m benchmarks.train_step --help` (any)."""
