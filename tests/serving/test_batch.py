"""serving.batch on its own: members answered in order under their request ids, errors as the single call's
statuses, deadlines from the call's receipt, the shape of a call checked. The services' batch calls over real
servers are tested in tests/services/test_batch_*.py."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import grpc
import pytest

from recmesh.registry import VersionNotAvailable
from recmesh.v1.batch_pb2 import BatchMember
from recmesh.v1.embedding_store_service_pb2 import (
    BatchGetEmbeddingsRequest,
    GetEmbeddingsRequest,
    GetEmbeddingsResponse,
    GetEmbeddingsResult,
)
from serving import batch, errors, logs

WHERE = "/recmesh.v1.EmbeddingStoreService/BatchGetEmbeddings"
SECRET = "secret internal detail"


def call(*first_ids: str, timeouts_ms: Sequence[int] | None = None) -> BatchGetEmbeddingsRequest:
    """One request per id (its only item id); members "rid-<id>" with the given timeouts, or none."""
    requests = [GetEmbeddingsRequest(item_ids=[i]) for i in first_ids]
    if timeouts_ms is None:
        return BatchGetEmbeddingsRequest(requests=requests)
    members = [BatchMember(request_id=f"rid-{i}", timeout_ms=t) for i, t in zip(first_ids, timeouts_ms, strict=True)]
    return BatchGetEmbeddingsRequest(requests=requests, members=members)


class Handler:
    """Answers a request with its id as the model version, after noting the request id bound; raises on cue."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, request: GetEmbeddingsRequest) -> GetEmbeddingsResponse:
        item = request.item_ids[0]
        self.seen.append((item, logs.get_request_id()))
        return finish(item)


def finish(item: str) -> GetEmbeddingsResponse:
    if item == "invalid":
        raise errors.InvalidArgument("item_ids must not be empty")
    if item == "gone":
        raise VersionNotAvailable("model version 'v9' is not loaded here and not on disk")
    if item == "boom":
        raise ValueError(SECRET)
    return GetEmbeddingsResponse(model_version=item)


def answers(results: list[GetEmbeddingsResult]) -> list[tuple[int, str]]:
    """(0, version) for a response, (code, message) for an error."""
    return [
        (0, r.response.model_version) if r.WhichOneof("result") == "response" else (r.error.code, r.error.message)
        for r in results
    ]


@pytest.fixture
def late_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reading of the members' clock is 10 s after the previous one."""
    ticks = itertools.count(0.0, 10.0)
    monkeypatch.setattr(batch, "clock", lambda: next(ticks))


async def test_members_are_answered_in_order_each_under_its_own_request_id():
    handler = Handler()
    token = logs.set_request_id("the-call")
    try:
        results = await batch.answer_each(
            call("a", "b", "c", timeouts_ms=[0, 0, 0]), handler, GetEmbeddingsResult, WHERE
        )
        assert answers(results) == [(0, "a"), (0, "b"), (0, "c")]
        assert handler.seen == [("a", "rid-a"), ("b", "rid-b"), ("c", "rid-c")]
        assert logs.get_request_id() == "the-call"  # restored after the batch

        handler.seen.clear()
        await batch.answer_each(call("a", "b"), handler, GetEmbeddingsResult, WHERE)  # no members
        no_id = BatchGetEmbeddingsRequest(requests=[GetEmbeddingsRequest(item_ids=["c"])], members=[BatchMember()])
        await batch.answer_each(no_id, handler, GetEmbeddingsResult, WHERE)
        assert handler.seen == [("a", "the-call"), ("b", "the-call"), ("c", "the-call")]
    finally:
        logs.request_id_var.reset(token)


async def test_errors_are_the_single_calls_statuses_and_fail_only_their_member(caplog):
    with caplog.at_level(logging.ERROR, logger="serving.errors"):
        results = await batch.answer_each(
            call("a", "invalid", "gone", "boom", "b", timeouts_ms=[0] * 5), Handler(), GetEmbeddingsResult, WHERE
        )
    assert answers(results) == [
        (0, "a"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "item_ids must not be empty"),
        (grpc.StatusCode.NOT_FOUND.value[0], "model version 'v9' is not loaded here and not on disk"),
        (grpc.StatusCode.INTERNAL.value[0], "internal error (request_id=rid-boom)"),
        (0, "b"),
    ]
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and SECRET in str(logged[0].exc_info[1])  # the traceback, once, in the log only
    assert WHERE in logged[0].getMessage() and "member 3" in logged[0].getMessage()


async def test_a_member_out_of_time_is_deadline_exceeded_without_being_handled(late_clock):
    handler = Handler()
    results = await batch.answer_each(
        call("a", "b", "c", timeouts_ms=[0, 5000, 0]), handler, GetEmbeddingsResult, WHERE
    )
    assert [code for code, _ in answers(results)] == [0, grpc.StatusCode.DEADLINE_EXCEEDED.value[0], 0]
    assert "5000 ms" in results[1].error.message
    assert [item for item, _ in handler.seen] == ["a", "c"]


async def test_members_computed_together_are_checked_first_and_finished_in_order(late_clock):
    computed: list[list[str]] = []

    async def compute(requests: Sequence[GetEmbeddingsRequest]) -> list[str | Exception]:
        computed.append([r.item_ids[0] for r in requests])
        return [errors.NotFound("no such item") if r.item_ids[0] == "x" else r.item_ids[0] for r in requests]

    seen: list[str | None] = []

    def finish_noting(item: str) -> GetEmbeddingsResponse:
        seen.append(logs.get_request_id())
        return finish(item)

    the_call = call("a", "late", "x", "boom", "b", timeouts_ms=[0, 1, 0, 0, 0])
    results = await batch.answer_together(the_call, compute, finish_noting, GetEmbeddingsResult, WHERE)
    assert computed == [["a", "x", "boom", "b"]]  # one call, without the member out of time
    codes = [code for code, _ in answers(results)]
    assert codes == [0, 4, 5, 13, 0]  # OK, DEADLINE_EXCEEDED, NOT_FOUND, INTERNAL, OK
    assert results[3].error.message == "internal error (request_id=rid-boom)"
    assert seen == ["rid-a", "rid-boom", "rid-b"]


async def test_the_shape_of_the_call_is_checked_first():
    handler = Handler()
    most = call(*[f"i{n}" for n in range(batch.MAX_BATCH_MEMBERS)])
    assert len(await batch.answer_each(most, handler, GetEmbeddingsResult, WHERE)) == 256
    with pytest.raises(errors.InvalidArgument, match="at most 256 requests per batch call, got 257"):
        await batch.answer_each(call(*[f"i{n}" for n in range(257)]), handler, GetEmbeddingsResult, WHERE)
    uneven = call("a", "b", timeouts_ms=[0, 0])
    uneven.members.add()
    with pytest.raises(errors.InvalidArgument, match="3 members for 2 requests"):
        await batch.answer_each(uneven, handler, GetEmbeddingsResult, WHERE)
    assert len(handler.seen) == 256  # nothing of the refused calls ran
    assert await batch.answer_each(call(), handler, GetEmbeddingsResult, WHERE) == []
