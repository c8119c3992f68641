"""Which model versions a request may pin (recmesh.registry): only what the process holds, never a load.

A caller alternating two old versions costs no load; a version a request is using survives pointer flips; a broken
bundle appearing while serving is refused once, the served version keeps answering, and it is picked up once it
is whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest

from recmesh import publish as pub
from recmesh.publish import write_pointer_file
from recmesh.redis_layout import POINTER_KEY
from recmesh.registry import ModelRegistry, VersionNotAvailable
from recmesh.v1 import candidate_generation_service_pb2 as pb
from services.candidate_generation.core import CandidateGenerator
from tests.helpers import copy_bundle
from tests.services.embedding_store_helpers import running_store
from tests.services.stage_servers import serve_candidates

DB = 6
session_loop = pytest.mark.asyncio(loop_scope="session")


def three_versions(bundle_path: Path, models_dir: Path) -> list[str]:
    """Three valid copies of the test bundle, oldest first."""
    return [copy_bundle(bundle_path, models_dir, f"{bundle_path.name}-{suffix}").name for suffix in "abc"]


def corrupt(directory: Path) -> bytes:
    """Flip one byte of items.txt (its sha256 no longer matches the manifest); returns the original bytes."""
    path = directory / "items.txt"
    original = path.read_bytes()
    path.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    return original


@session_loop
async def test_alternating_two_old_versions_is_not_found_and_loads_nothing(bundle_path, model, tmp_path):
    """The issue's reproduction: pinning old versions in turn made every service reload on every request."""
    models = tmp_path / "models"
    a, b, c = three_versions(bundle_path, models)
    async with serve_candidates(models) as (stub, _channel):
        for _ in range(20):
            for version in (a, b):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    request = pb.RetrieveCandidatesRequest(item_ids=model.item_ids[:3], k=5, model_version=version)
                    await stub.RetrieveCandidates(request, timeout=5)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert f"{version!r} cannot be pinned here; pinnable: {c}" in (info.value.details() or "")
        reply = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=model.item_ids[:3], k=5))
        assert reply.model_version == c

    registry = ModelRegistry(models)
    registry.load_initial()
    generator = CandidateGenerator(registry)
    started = time.perf_counter()
    for _ in range(200):
        with pytest.raises(VersionNotAvailable):
            await generator.retrieve(item_ids=model.item_ids[:3], k=5, model_version=a)
    per_request_ms = (time.perf_counter() - started) / 200 * 1000
    assert registry.counter.loads == 1 and registry.counter.versions == [c]
    assert per_request_ms < 50  # a refusal, not a load (a load takes longer; 50 ms leaves room for a busy machine)


@session_loop
async def test_published_and_previous_are_pinnable_a_retired_one_lingers_then_goes(bundle_path, model, tmp_path):
    models = tmp_path / "models"
    a, b, c = three_versions(bundle_path, models)
    write_pointer_file(models, a)
    registry = ModelRegistry(models, linger_s=0.3)
    registry.load_initial()
    for version in (b, c):
        write_pointer_file(models, version)  # what publish does; the watcher would then switch
        await registry.switch_to(version)
        if version == b:
            assert registry.pinnable == [b, a]
    assert registry.pinnable == [c, b, a]  # a is retired but lingers: requests already under way finish
    assert (await registry.get(a)).version == a
    await asyncio.sleep(0.35)
    registry.expire()
    assert registry.pinnable == [c, b]
    with pytest.raises(VersionNotAvailable, match=f"pinnable: {c}, {b}"):
        await registry.get(a)
    assert registry.counter.loads == 3  # one per flip, none per request


@session_loop
async def test_a_pinned_version_in_use_is_not_evicted_by_flips_during_the_request(bundle_path, model, tmp_path):
    """A request holding version a (its first hop pinned it) while the pointer flips twice: its later hop still
    gets a, with no load; once it ends (and the linger is over) a is dropped."""
    models = tmp_path / "models"
    a, b, c = three_versions(bundle_path, models)
    write_pointer_file(models, a)
    registry = ModelRegistry(models, linger_s=0.0)
    registry.load_initial()
    generator = CandidateGenerator(registry)
    first_hop_done, flips_done = asyncio.Event(), asyncio.Event()

    async def request() -> str:
        async with registry.lease(a):  # hop 1 pinned a
            first_hop_done.set()
            await flips_done.wait()
            found = await generator.retrieve(item_ids=model.item_ids[:3], k=5, model_version=a)  # hop 2
            return found.model_version

    running = asyncio.create_task(request())
    await first_hop_done.wait()
    for version in (b, c):  # the pointer moves, twice, while the request runs
        write_pointer_file(models, version)
        await registry.switch_to(registry.pointer_target())
    assert a in registry.pinnable  # linger 0, but leased
    flips_done.set()
    assert await running == a
    assert registry.pinnable == [c, b]  # released: dropped
    assert registry.counter.loads == 3


@session_loop
async def test_a_corrupt_newest_bundle_is_refused_once_and_picked_up_when_whole(bundle_path, model, tmp_path, caplog):
    """No pointer file: the newest complete bundle is the target. One appears corrupt while serving: one log line,
    the served version keeps answering, and the bundle is loaded once it is repaired."""
    models = tmp_path / "models"
    a = copy_bundle(bundle_path, models, f"{bundle_path.name}-a").name
    registry = ModelRegistry(models, retry_s=0.1)
    registry.load_initial()
    generator = CandidateGenerator(registry)
    watcher = asyncio.create_task(registry.watch(every_s=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="recmesh.registry"):
            b_dir = copy_bundle(bundle_path, models, f"{bundle_path.name}-b")
            original = corrupt(b_dir)
            await asyncio.sleep(1.0)  # several watch rounds and retries (0.1, 0.2, 0.4 s)
            refused = [r for r in caplog.records if r.name == "recmesh.registry"]
            assert len(refused) == 1 and "refused" in refused[0].getMessage()
            assert registry.counter.failures >= 2  # retried, not logged again
            found = await generator.retrieve(item_ids=model.item_ids[:3], k=5)
            assert found.model_version == a and registry.current == a

            (b_dir / "items.txt").write_bytes(original)  # the copy finishes
            deadline = time.monotonic() + 10
            while registry.current != b_dir.name:
                assert time.monotonic() < deadline, "the repaired bundle was never picked up"
                await asyncio.sleep(0.05)
        found = await generator.retrieve(item_ids=model.item_ids[:3], k=5)
        assert found.model_version == b_dir.name
    finally:
        watcher.cancel()


@session_loop
async def test_the_pointer_moving_to_a_half_written_bundle_keeps_the_service_answering(
    bundle_path, model, url, client, tmp_path
):
    """A real embedding-store server: Redis' pointer moves to a bundle missing a file. The served version keeps
    answering, pinning the broken one is NOT_FOUND; once the file is there it is served."""
    models = tmp_path / "models"
    a = copy_bundle(bundle_path, models, f"{bundle_path.name}-a")
    pub.publish(a, url, progress=False)
    b = copy_bundle(bundle_path, models, f"{bundle_path.name}-b")
    moved = (b / "tables.npz").rename(tmp_path / "tables.npz")  # half-written: the manifest lists it
    ids = model.item_ids[:3]
    async with running_store(models, url) as s:
        s.store.registry.retry_s = 0.1
        client.set(POINTER_KEY, b.name)
        await asyncio.sleep(0.6)
        assert (await s.get(ids)).model_version == a.name
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.get(ids, version=b.name)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "cannot be pinned here" in (
            info.value.details() or ""
        )
        moved.rename(b / "tables.npz")
        deadline = time.monotonic() + 10
        while (await s.get(ids)).model_version != b.name:
            assert time.monotonic() < deadline, "the finished bundle was never picked up"
            await asyncio.sleep(0.1)
        assert s.store.registry.pinnable == [b.name, a.name]
