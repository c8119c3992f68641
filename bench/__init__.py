"""Benchmarks run as modules: `python -m bench.serve` (the whole stack under load), `python -m bench.ann`
(nearest-neighbour search at batch size 1)."""
