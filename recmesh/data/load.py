"""A data set by name: the built-in synthetic sessions (`synth[:items=N,users=N,seed=N]`) or a sessions file."""

from __future__ import annotations

import sys

from recmesh.data.sessions import Dataset

SYNTH = "synth"


def load_dataset(spec: str, fmt: str = "auto", delimiter: str | None = None, min_length: int = 1) -> Dataset:
    """`synth` or `synth:items=5000,users=20000,seed=0` for generated sessions, else a path to a file."""
    if spec == SYNTH or spec.startswith(SYNTH + ":"):
        from recmesh.data.synth import generate

        options = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if kv)
        kwargs = {
            "n_items": int(options.pop("items", 5000)),
            "n_users": int(options.pop("users", 20000)),
            "seed": int(options.pop("seed", 0)),
        }
        if options:
            raise SystemExit(f"unknown synth options: {', '.join(options)} (use items, users, seed)")
        dataset = generate(**kwargs, progress=True)
    else:
        from recmesh.data.readers import read_sessions

        csv_options = {"delimiter": delimiter} if delimiter else {}
        dataset = read_sessions(spec, fmt=fmt, min_length=min_length, **csv_options)
    print(dataset.summary(), file=sys.stderr)
    return dataset
