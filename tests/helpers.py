"""Helpers shared by test folders: bundle copies, a two-version models dir, sample sessions, a Redis db url."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recmesh import bundle
from recmesh.bundle import MANIFEST


def redis_url(server: Any, db: int) -> str:
    return f"redis://127.0.0.1:{server.port}/{db}"


def copy_bundle(src: Path, models_dir: Path, version: str, mutate: Callable[[Path], None] | None = None) -> Path:
    """A sealed copy of `src` under models_dir/<version>/ with that version in its manifest; `mutate(dir)` runs
    before sealing (so the copy stays a valid bundle whatever it changed)."""
    dst = Path(models_dir) / version
    shutil.copytree(src, dst)
    manifest = json.loads((dst / bundle.MANIFEST).read_text())
    (dst / bundle.MANIFEST).unlink()
    if mutate is not None:
        mutate(dst)
    bundle.seal(dst, {**manifest, "version": version})
    return dst


def two_version_models_dir(bundle_path: Path, dest: Path) -> tuple[Path, str, str]:
    """A models dir holding the bundle twice: under its own version and under a newer one (a copy whose manifest
    names the new version; the manifest hashes every file but itself, so the copy stays valid). Returns
    (models_dir, old version, new version); the new one sorts last, so it is what a fresh server serves."""
    old = bundle_path.name
    new = f"{old}-b"
    shutil.copytree(bundle_path, dest / old)
    shutil.copytree(bundle_path, dest / new)
    manifest_path = dest / new / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = new
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return dest, old, new


def sample_sessions(n: int) -> list[list[str]]:
    """Realistic sessions (oldest first): the first n of the synthetic data the `models_dir` bundle was trained on
    (same generator arguments), so the ranker's co-visitation and transition features are informative."""
    return [list(seq) for seq in _training_sequences()[:n]]


@functools.cache
def _training_sequences() -> tuple[tuple[str, ...], ...]:
    from recmesh.data.synth import generate

    return tuple(tuple(seq) for seq in generate(n_items=2000, n_users=3000, seed=1).sequences)
