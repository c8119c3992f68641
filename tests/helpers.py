"""Helpers shared by test folders: bundle copies, a two-version models dir, sample sessions, a Redis db url, and
API keys (a keys file, an all-scope key for tests about something else, a gRPC channel interceptor sending it)."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from gateway import auth
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


# ------------------------------------------------------------------------------------------------- API keys
def write_keys(path: Path, *entries: dict[str, Any]) -> Path:
    """A keys file holding ``entries`` (gateway.auth.key_entry's), written whole at once (a reload never sees
    half a file)."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(json.dumps({"keys": list(entries)}))
    staged.replace(path)
    return path


@functools.cache
def test_key() -> tuple[str, Path]:
    """An API key holding every scope, and a keys file (in a temporary directory of its own) holding it."""
    key = auth.new_key("tests")
    path = Path(tempfile.mkdtemp(prefix="recmesh-keys-")) / "keys.json"
    return key, write_keys(path, auth.key_entry(key, sorted(auth.SCOPES)))


def auth_headers(key: str | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {key or test_key()[0]}"}


class _KeyMetadata:
    """Adds ``authorization: Bearer <key>`` to a call's metadata."""

    def __init__(self, key: str | None = None) -> None:
        self.header = ("authorization", f"Bearer {key or test_key()[0]}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self.header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnaryKey(_KeyMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)


class _UnaryStreamKey(_KeyMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)


class _StreamUnaryKey(_KeyMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._with_key(details), request_iterator)


def key_interceptors(key: str | None = None) -> list[Any]:
    """Client interceptors sending the API key (the all-scope test key by default) with every call; one per kind
    of method (grpc.aio files an interceptor under the first kind it implements only)."""
    return [kind(key) for kind in (_UnaryUnaryKey, _UnaryStreamKey, _StreamUnaryKey)]


def keyed_channel(target: str, key: str | None = None) -> grpc.aio.Channel:
    """A plaintext channel whose every call carries the API key."""
    return grpc.aio.insecure_channel(target, interceptors=key_interceptors(key))
