"""Opportunistic batching of a stage's calls (gateway/batching.py, gateway/stage_client.py).

The Batcher on its own, with a send function the test controls: no timer (a lone call goes out at once), calls
that arrive while a batch is in flight go out together when it returns, a member whose deadline passes fails
alone without holding up its batch. Then the real thing: concurrent recommendations through the gateway and the
three real services, batched, answer exactly what the offline pipeline (and the unbatched gateway) answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.batching import Batcher, Member
from recmesh.pipeline import Model
from tests.gateway.harness import ids, reference, running_gateway
from tests.helpers import sample_sessions


class Late(Exception):
    pass


class ControlledSend:
    """A send function that records each batch and answers it when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.release: list[asyncio.Event] = []

    async def __call__(self, members: list[Member[Any, Any]]) -> None:
        self.batches.append([m.request for m in members])
        gate = asyncio.Event()
        self.release.append(gate)
        await gate.wait()
        for member in members:
            member.resolve(f"answer to {member.request}")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_out_at_once_as_a_batch_of_one() -> None:
    send = ControlledSend()
    batcher: Batcher[str, str] = Batcher(send, Late)
    call = asyncio.ensure_future(batcher.call("a", timeout_s=5))
    await settle()
    assert send.batches == [["a"]]  # sent before anything else happened: no batching delay
    send.release[0].set()
    assert await call == "answer to a"


async def test_calls_arriving_while_a_batch_is_in_flight_go_out_together_when_it_returns() -> None:
    send = ControlledSend()
    batcher: Batcher[str, str] = Batcher(send, Late)
    first = asyncio.ensure_future(batcher.call("a", timeout_s=5))
    await settle()
    rest = [asyncio.ensure_future(batcher.call(name, timeout_s=5)) for name in "bcd"]
    await settle()
    assert send.batches == [["a"]]  # b, c, d wait for a's batch
    send.release[0].set()
    await settle()
    assert send.batches == [["a"], ["b", "c", "d"]]
    send.release[1].set()
    assert await asyncio.gather(first, *rest) == [f"answer to {x}" for x in "abcd"]
    assert (batcher.batches, batcher.members) == (2, 4)


async def test_a_member_past_its_deadline_fails_alone_without_delaying_its_batch() -> None:
    send = ControlledSend()
    batcher: Batcher[str, str] = Batcher(send, Late)
    blocker = asyncio.ensure_future(batcher.call("a", timeout_s=5))
    await settle()
    hasty = asyncio.ensure_future(batcher.call("hasty", timeout_s=0.02))
    patient = asyncio.ensure_future(batcher.call("patient", timeout_s=5))
    with pytest.raises(Late):
        await hasty  # fails at its own deadline while its would-be batch is still waiting
    send.release[0].set()
    await settle()
    assert send.batches[1] == ["patient"]  # the expired member is left out of the batch that had not gone out
    send.release[1].set()
    assert await patient == "answer to patient" and await blocker == "answer to a"


async def test_a_member_whose_deadline_passes_in_flight_fails_and_the_others_get_their_answers() -> None:
    send = ControlledSend()
    batcher: Batcher[str, str] = Batcher(send, Late)
    hasty = asyncio.ensure_future(batcher.call("hasty", timeout_s=0.02))
    await settle()
    patient = asyncio.ensure_future(batcher.call("patient", timeout_s=5))
    with pytest.raises(Late):
        await hasty
    send.release[0].set()
    await settle()
    send.release[1].set()
    assert await patient == "answer to patient"


async def test_a_failed_batch_fails_each_of_its_members_and_the_next_batch_still_goes() -> None:
    calls = 0

    async def send(members: list[Member[str, str]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("replica gone")
        for member in members:
            member.resolve("ok")

    batcher: Batcher[str, str] = Batcher(send, Late)
    with pytest.raises(ConnectionError):
        await batcher.call("a", timeout_s=5)
    assert await batcher.call("b", timeout_s=5) == "ok"


async def test_batches_in_flight_are_bounded_by_max_in_flight() -> None:
    send = ControlledSend()
    batcher: Batcher[str, str] = Batcher(send, Late, max_in_flight=2)
    calls = [asyncio.ensure_future(batcher.call(x, timeout_s=5)) for x in "abc"]
    await settle()
    assert send.batches == [["a"], ["b"]]  # two at once; c waits for one of them
    send.release[0].set()
    await settle()
    assert send.batches[2] == ["c"]
    for gate in send.release[1:]:
        gate.set()
    assert await asyncio.gather(*calls) == [f"answer to {x}" for x in "abc"]


@pytest.mark.asyncio(loop_scope="session")  # the stage services run on the session's loop
async def test_concurrent_recommendations_are_batched_and_equal_the_offline_pipeline(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model: Model
) -> None:  # type: ignore[no-untyped-def]
    sessions = sample_sessions(40)
    async with running_gateway(models_dir, redis_server.url, stage_ports) as gateway:
        answers = await asyncio.gather(*(gateway.recommend(session=s, k=10) for s in sessions))
        ranking = gateway.clients.ranking.stage.batcher
        assert ranking is not None and ranking.members == len(sessions)
        assert ranking.batches < len(sessions)  # some requests shared a call
    async with running_gateway(models_dir, redis_server.url, stage_ports, stage_batching=False) as unbatched:
        alone = [await unbatched.recommend(session=s, k=10) for s in sessions]
    for session, batched, single in zip(sessions, answers, alone, strict=True):
        assert ids(batched) == ids(single) == reference(model, session)
        assert [i["score"] for i in batched["items"]] == [i["score"] for i in single["items"]]
