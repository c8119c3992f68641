"""Versioned, immutable model bundles: models/<version>/ with a manifest that hashes every file.

No pickle anywhere: arrays are .npy/.npz read with allow_pickle=False, the ranker is JSON, so a bundle is safe to
load from an untrusted place. `load_manifest` refuses a tampered or partial bundle before anything is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1


class BundleError(ValueError):
    """A bundle that is missing, partial, tampered with, or of an unknown format."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version(fingerprint: str) -> str:
    """Sortable by time, unique per data: 20261128T181500Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + fingerprint[:8]


def seal(directory: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file under `directory` into the manifest and write it last: a bundle without a manifest is
    partial by definition. Writing happens in a temporary directory renamed into place, so readers never see a
    half-written bundle."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {**manifest, "format": FORMAT, "files": {str(p.relative_to(directory)): sha256_of(p) for p in files}}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)
    return directory


def load_manifest(directory: Path, verify: bool = True) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory}: not a bundle (no {MANIFEST}; partial or still being written)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: unreadable manifest: {e}") from e
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r}, this code reads {FORMAT}")
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    expected: dict[str, str] = manifest.get("files", {})
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing:
        raise BundleError(f"{directory}: partial bundle, missing {', '.join(missing)}")
    if extra:
        raise BundleError(f"{directory}: files not in the manifest: {', '.join(extra)}")
    for name, digest in expected.items():
        if sha256_of(directory / name) != digest:
            raise BundleError(f"{directory}: {name} does not match its sha256 in the manifest (tampered?)")


def list_versions(models_dir: Path) -> list[str]:
    """Complete bundles under models_dir, oldest first (version ids sort by time)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if (p / MANIFEST).is_file())


def resolve(models_dir: Path, version: str = "") -> Path:
    """The bundle directory for `version`, or the newest complete one when version is empty."""
    versions = list_versions(models_dir)
    if not versions:
        raise BundleError(f"no bundle in {models_dir}: run `recmesh train` first")
    if not version:
        return Path(models_dir) / versions[-1]
    if version not in versions:
        raise BundleError(f"model version {version!r} not in {models_dir} (have: {', '.join(versions[-5:])})")
    return Path(models_dir) / version
