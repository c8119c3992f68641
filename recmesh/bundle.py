"""Versioned, immutable model bundles: models/<version>/ with a manifest that hashes every file.

No pickle anywhere: arrays are .npy/.npz read with allow_pickle=False, the ranker is JSON, and every path a bundle
names (manifest files, ScaNN asset paths) must stay inside the bundle directory, so loading a bundle cannot run
code or read files elsewhere. `load_manifest` refuses a tampered or partial bundle before anything is used.

The sha256 list proves integrity (the files are the ones the manifest lists), not authenticity: whoever can write
the models directory can write a matching manifest. With ``BUNDLE_SIGNING_KEY`` set, `seal` (so `recmesh train`)
and `recmesh publish` add an HMAC-SHA256 of the manifest, and every verified load refuses a bundle without a valid
one: it then also proves the bundle was sealed by a holder of that key (docs/security.md, "Model bundles").

    seal(Path("models/v1"), {"version": "v1", ...})     # hashes (and signs, when the key is set) the files
    load_manifest(Path("models/v1"))                    # BundleError unless whole, untampered (and signed)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1
SIGNING_KEY_ENV = "BUNDLE_SIGNING_KEY"  # a secret (k8s Secret); unset = bundles are not signed nor checked
SIGNATURE = "signature"  # the manifest field: {"alg": "hmac-sha256", "value": hex}


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
    manifest.pop(SIGNATURE, None)
    write_manifest(directory, sign(manifest))
    return directory


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a temporary file renamed over it)."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


def signing_key() -> bytes | None:
    """The HMAC key from ``BUNDLE_SIGNING_KEY`` (None when unset or empty)."""
    key = os.environ.get(SIGNING_KEY_ENV, "")
    return key.encode() if key else None


def _mac(manifest: dict[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in manifest.items() if k != SIGNATURE}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def sign(manifest: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """The manifest with its HMAC-SHA256 (over everything but the signature, so every file's sha256 too), when a
    key is given or set in the environment; unchanged otherwise."""
    key = key or signing_key()
    if key is None:
        return manifest
    return {**manifest, SIGNATURE: {"alg": "hmac-sha256", "value": _mac(manifest, key)}}


def verify_signature(directory: Path, manifest: dict[str, Any], key: bytes | None = None) -> None:
    """BundleError unless the manifest carries a valid HMAC under ``key`` (else the environment's); nothing is
    checked when there is no key."""
    key = key or signing_key()
    if key is None:
        return
    signature = manifest.get(SIGNATURE)
    if not isinstance(signature, dict) or signature.get("alg") != "hmac-sha256":
        raise BundleError(f"{directory}: bundle is not signed, and {SIGNING_KEY_ENV} is set (sign it: recmesh publish)")
    if not hmac.compare_digest(str(signature.get("value", "")), _mac(manifest, key)):
        raise BundleError(
            f"{directory}: manifest signature does not match {SIGNING_KEY_ENV} (tampered, or another key)"
        )


def sign_unsigned(directory: Path) -> bool:
    """Sign a whole but unsigned bundle with the environment's key (what `recmesh publish` does: the publisher
    vouches for it). True when it signed; False without a key or when already signed. BundleError for a partial or
    tampered bundle, or one signed under another key."""
    directory = Path(directory)
    manifest = load_manifest(directory, verify=False)
    verify_files(directory, manifest)
    if signing_key() is None:
        return False
    if SIGNATURE in manifest:
        verify_signature(directory, manifest)
        return False
    write_manifest(directory, sign(manifest))
    return True


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
        verify_signature(directory, manifest)
        verify_files(directory, manifest)
    return manifest


def inside(directory: Path, name: str | Path, what: str = "path") -> Path:
    """``directory / name`` resolved (symlinks followed), or BundleError when that leaves ``directory``: an
    absolute name, ``..`` parts, or a link pointing out. Every path a bundle names goes through here."""
    root = Path(directory).resolve()
    path = (root / name).resolve()  # an absolute `name` replaces root: caught below
    if not path.is_relative_to(root):
        raise BundleError(f"{directory}: {what} {str(name)!r} points outside the bundle directory")
    return path


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    expected: dict[str, str] = manifest.get("files", {})
    if not isinstance(expected, dict):
        raise BundleError(f"{directory}: manifest 'files' is not a mapping")
    for name in expected:
        inside(directory, name, "manifest file")
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    for name in present:
        inside(directory, name, "file")  # a symbolic link to somewhere else
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
