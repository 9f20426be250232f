"""Across DVC experiments: reading `dvc exp show`, `dnnprobe compare` and `dnnprobe sweep`."""
