"""Benchmarks: `python -m bench.ann` (nearest-neighbour search at batch size 1)."""
