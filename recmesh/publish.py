"""`recmesh publish`: push a bundle's item vectors into Redis, then flip the version pointer.

The keys are recmesh/redis_layout.py's, every one namespaced by version so two versions live side by side.
Vectors and meta get a TTL (they can be rebuilt from the bundle), refreshed by every publish of that version.
The pointer is written by ONE `SET` after every vector batch succeeded, so a reader that sees the new version
finds all of its vectors; a bundle that fails validation, or a write that fails halfway, leaves it untouched.

Vectors go to the cache Redis (``cache_url``; the store's URL when not given), the pointer to the durable store.
The pointer is also written next to the bundles, ``<models dir>/PUBLISHED`` (atomic rename), so a Redis that lost
it can be re-seeded from disk (:func:`published_on_disk`; the gateway does it, docs/reliability.md).

After the flip, a bundle with a catalogue (``catalog.jsonl``) seeds the live catalogue in the store
(recmesh.catalog.live): its items not yet live are added; items already live keep their live attributes (a
change made through the API is never undone by a publish). The catalogue file is read before anything is written,
so a bad one fails the publish with the pointer unmoved.

    publish("models/20260101T000000Z", "redis://store:6379/0", cache_url="redis://cache:6379/0")
    published_on_disk(Path("models"))   # "20260101T000000Z", or None
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import redis
from tqdm import tqdm

from recmesh import bundle
from recmesh.bundle import BundleError
from recmesh.catalog import live as live_catalog
from recmesh.catalog.files import load_catalog
from recmesh.catalog.table import Catalog, CatalogError
from recmesh.redis_layout import POINTER_KEY, VECTOR_DTYPE, VECTOR_TTL_S, meta_key, vector_key

POINTER_FILE = "PUBLISHED"  # in the models directory, next to the bundles (not a bundle: no manifest)


def published_on_disk(models_dir: Path) -> str | None:
    """The version the last publish from this models directory pointed at, or None (never published, or a
    file that does not name a version)."""
    try:
        version = (Path(models_dir) / POINTER_FILE).read_text().strip()
    except OSError:
        return None
    return version if version and "/" not in version and version not in (".", "..") else None


def write_pointer_file(models_dir: Path, version: str) -> None:
    """Write ``<models_dir>/PUBLISHED`` atomically (a temporary file, fsynced, renamed over the old one)."""
    target = Path(models_dir) / POINTER_FILE
    temporary = target.with_name(f".{POINTER_FILE}.{os.getpid()}.tmp")
    with temporary.open("w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, target)


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or failed during the publish (the pointer was not moved)."""


def current_version(client: redis.Redis) -> str | None:
    """The published version, or None when nothing was published (yet, or since Redis lost its data)."""
    value = client.get(POINTER_KEY)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def load_vectors(bundle_path: Path) -> tuple[str, list[str], np.ndarray]:
    """(version, item ids, memory-mapped (n, dim) float32 vectors) of a verified bundle; BundleError if bad."""
    bundle_path = Path(bundle_path)
    manifest = bundle.load_manifest(bundle_path, verify=True)
    version = manifest.get("version")
    if not isinstance(version, str) or not version:
        raise BundleError(f"{bundle_path}: manifest has no version")
    try:
        item_ids = (bundle_path / "items.txt").read_text().split("\n")
        vectors = np.load(bundle_path / "vectors.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle_path}: unreadable items.txt or vectors.npy: {e}") from e
    if vectors.ndim != 2 or vectors.dtype != VECTOR_DTYPE:
        raise BundleError(f"{bundle_path}: vectors.npy is {vectors.dtype} {vectors.shape}, expected (items, dim) <f4")
    if vectors.shape[0] != len(item_ids):
        raise BundleError(f"{bundle_path}: {vectors.shape[0]} vectors for {len(item_ids)} item ids")
    if len(set(item_ids)) != len(item_ids):
        raise BundleError(f"{bundle_path}: duplicate item ids in items.txt")
    return version, item_ids, vectors


def bundle_catalog(bundle_path: Path) -> Catalog | None:
    """The bundle's catalogue snapshot, None when it has none; BundleError for one that cannot be read."""
    try:
        return load_catalog(bundle_path)
    except (ValueError, OSError) as e:  # CatalogFileError, CatalogError
        raise BundleError(f"{bundle_path}: unreadable catalog.jsonl: {e}") from e


def _where(redis_url: str) -> str:
    """host:port/db of a Redis URL, without credentials (for messages)."""
    parts = urlsplit(redis_url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def _write_batch(pipe: redis.client.Pipeline, version: str, ids: list[str], rows: np.ndarray, ttl_s: int) -> None:
    """One round trip: SET with TTL for every vector of the batch (MSET cannot carry a TTL)."""
    data = np.ascontiguousarray(rows, dtype=VECTOR_DTYPE)
    width = data.shape[1] * VECTOR_DTYPE.itemsize
    raw = data.tobytes()
    for i, item in enumerate(ids):
        pipe.set(vector_key(version, item), raw[i * width : (i + 1) * width], ex=ttl_s)
    pipe.execute()


def publish(
    bundle_path: Path | str,
    redis_url: str,
    batch: int = 5000,
    progress: bool = True,
    ttl_s: int = VECTOR_TTL_S,
    cache_url: str | None = None,
) -> str:
    """Write the bundle's vectors and meta to Redis (``cache_url``, else ``redis_url``), then point
    `recmesh:current_version` (in ``redis_url``, the durable store) and ``<models dir>/PUBLISHED`` at it; return
    the version.

    With ``BUNDLE_SIGNING_KEY`` set, an unsigned (whole) bundle is signed first and one signed under another key is
    refused (recmesh.bundle). Raises BundleError for a missing, partial, tampered or inconsistent bundle (before
    anything is written) and RedisUnavailable when Redis cannot be reached or fails mid-way; in both cases the
    pointer does not move (unless only the catalogue seeding, after the flip, failed: the message says so;
    CatalogError when the bundle's catalogue types disagree with the live catalogue's).
    Publishing the same version again rewrites its vectors and refreshes their TTL.
    """
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if bundle.signing_key() is not None:
        bundle.sign_unsigned(Path(bundle_path))  # the publisher vouches for the bundle
    version, item_ids, vectors = load_vectors(Path(bundle_path))
    catalog = bundle_catalog(Path(bundle_path))
    flipped = False
    where = _where(cache_url or redis_url)
    client = redis.Redis.from_url(cache_url or redis_url, socket_connect_timeout=5, socket_timeout=30)
    store = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30) if cache_url else client
    try:
        client.ping()
        pipe = client.pipeline(transaction=False)
        with tqdm(
            total=len(item_ids),
            desc=f"publish {version}",
            unit="vec",
            file=sys.stderr,
            disable=not progress,
            mininterval=0.5,
        ) as bar:
            for start in range(0, len(item_ids), batch):
                ids = item_ids[start : start + batch]
                _write_batch(pipe, version, ids, vectors[start : start + len(ids)], ttl_s)
                bar.update(len(ids))
        pipe.hset(
            meta_key(version),
            mapping={"dim": int(vectors.shape[1]), "items": len(item_ids), "published_at": int(time.time())},
        )
        pipe.expire(meta_key(version), ttl_s)
        pipe.execute()
        # The file first: once Redis says the new version, a Redis restored from an older state re-seeds
        # from the file, never goes back.
        write_pointer_file(Path(bundle_path).parent, version)
        where = _where(redis_url)
        store.set(POINTER_KEY, version)  # the flip: one command, after every vector is in
        flipped = True
        if catalog is not None:
            seeded = live_catalog.seed(store, catalog)
            if progress:
                print(
                    f"catalog: {seeded} of {len(catalog)} items added to the live catalogue (the rest were live)",
                    file=sys.stderr,
                )
    except redis.RedisError as e:
        if flipped:
            raise RedisUnavailable(
                f"Redis at {where} failed after {version} was published (pointer moved): its catalogue was not "
                f"seeded; publish again to seed it: {e}"
            ) from e
        raise RedisUnavailable(f"Redis at {where} failed, version pointer not moved: {e}") from e
    except CatalogError as e:  # the bundle's types disagree with the live catalogue's schema
        raise CatalogError(f"{version} is published (pointer moved), but its catalogue was not seeded: {e}") from e
    finally:
        client.close()
        store.close()
    return version
