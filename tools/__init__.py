"""Commands run from a laptop or CI (notebook runner, sweep, Kaggle push/status/pull); they never travel into kernels."""
