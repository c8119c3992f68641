"""`recmesh publish` against the real session Redis (its own db, so db 0 is untouched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from devtools.stack import free_port
from recmesh import publish as pub
from recmesh import redis_layout as layout
from recmesh.bundle import BundleError
from tests.helpers import copy_bundle, redis_url

DB = 4


@pytest.fixture
def url(redis_server) -> str:  # type: ignore[no-untyped-def]
    return redis_url(redis_server, DB)


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def test_publish_writes_every_vector_bitwise_with_ttl_meta_and_pointer(bundle_path, model, url, client):
    version = pub.publish(bundle_path, url, batch=700, progress=False)

    assert version == model.version
    assert pub.current_version(client) == version
    keys = [layout.vector_key(version, item) for item in model.item_ids]
    values = client.mget(keys)
    stored = np.frombuffer(b"".join(values), dtype="<f4").reshape(model.n_items, model.dim)
    assert stored.tobytes() == np.ascontiguousarray(model.space.vectors, dtype="<f4").tobytes()
    assert 0 < client.ttl(keys[0]) <= layout.VECTOR_TTL_S
    meta = client.hgetall(layout.meta_key(version))
    assert int(meta[b"dim"]) == model.dim and int(meta[b"items"]) == model.n_items and int(meta[b"published_at"]) > 0
    assert client.ttl(layout.POINTER_KEY) == -1  # the pointer is state, not cache


def test_republishing_refreshes_the_ttl(bundle_path, model, url, client):
    pub.publish(bundle_path, url, progress=False, ttl_s=100)
    key = layout.vector_key(model.version, model.item_ids[0])
    assert client.ttl(key) <= 100
    pub.publish(bundle_path, url, progress=False)
    assert client.ttl(key) > 100


def test_pointer_flips_only_after_every_vector_batch_is_written(bundle_path, model, url, client, tmp_path, monkeypatch):
    pub.publish(bundle_path, url, progress=False)
    new = copy_bundle(bundle_path, tmp_path, model.version + "-next")
    seen: list[str | None] = []
    real_write = pub._write_batch

    def write_and_look(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_write(*args, **kwargs)
        seen.append(pub.current_version(client))  # what a reader sees between batches

    monkeypatch.setattr(pub, "_write_batch", write_and_look)
    version = pub.publish(new, url, batch=300, progress=False)

    assert version == model.version + "-next"
    assert len(seen) == -(-model.n_items // 300) and set(seen) == {model.version}
    assert pub.current_version(client) == version
    assert client.exists(*[layout.vector_key(version, item) for item in model.item_ids]) == model.n_items


def test_tampered_bundle_is_refused_and_pointer_stays(bundle_path, model, url, client, tmp_path):
    pub.publish(bundle_path, url, progress=False)
    bad = copy_bundle(bundle_path, tmp_path, "tampered")
    with (bad / "vectors.npy").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")

    with pytest.raises(BundleError, match="sha256"):
        pub.publish(bad, url, progress=False)
    assert pub.current_version(client) == model.version
    assert client.keys("recmesh:tampered:*") == []


def test_inconsistent_bundle_is_refused_before_any_write(bundle_path, model, url, client, tmp_path):
    def drop_a_row(d: Path) -> None:
        vectors = np.load(d / "vectors.npy")
        np.save(d / "vectors.npy", vectors[:-1])

    bad = copy_bundle(bundle_path, tmp_path, "short", mutate=drop_a_row)  # sealed, but rows != ids
    with pytest.raises(BundleError, match="vectors for"):
        pub.publish(bad, url, progress=False)
    assert pub.current_version(client) is None
    assert client.dbsize() == 0


def test_partial_bundle_is_refused(tmp_path, url, client):
    (tmp_path / "half").mkdir()
    with pytest.raises(BundleError, match="not a bundle"):
        pub.publish(tmp_path / "half", url, progress=False)
    assert pub.current_version(client) is None


def test_unreachable_redis_is_one_clear_error(bundle_path):
    port = free_port()
    with pytest.raises(OSError) as info:  # the CLI prints OSError/ValueError as one line, no traceback
        pub.publish(bundle_path, f"redis://user:s3cret@127.0.0.1:{port}/0", progress=False)
    assert isinstance(info.value, pub.RedisUnavailable)
    assert f"127.0.0.1:{port}" in str(info.value) and "s3cret" not in str(info.value)
    assert "pointer not moved" in str(info.value)
