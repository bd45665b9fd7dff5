"""Speed benchmarks (run `python -m benchmarks.bench --help`)."""
