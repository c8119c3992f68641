"""Helpers for the batch-call tests of the three stage services: members, outcomes, the single call's answer.

A batch member's answer must equal the single call's: a response byte for byte, an error with its code and
message. These helpers put both in the same form, so a test compares them with one ``==``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from recmesh.v1.batch_pb2 import BatchMember

Outcome = tuple[str, Any]  # ("response", serialized bytes) or ("error", (code number, message))

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def members(*timeouts_ms: int) -> list[BatchMember]:
    """One member per timeout (0 = no limit), request ids "member-0", "member-1", ..."""
    return [BatchMember(request_id=f"member-{i}", timeout_ms=t) for i, t in enumerate(timeouts_ms)]


def outcome(result: Any) -> Outcome:
    """A batch result (XxxResult) as an Outcome."""
    which = result.WhichOneof("result")
    if which == "response":
        return "response", result.response.SerializeToString(deterministic=True)
    assert which == "error", f"a result must hold a response or an error: {result}"
    return "error", (result.error.code, result.error.message)


async def single(call: Awaitable[Any]) -> Outcome:
    """The answer of a single call as an Outcome."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as err:
        return "error", (err.code().value[0], err.details())
    return "response", reply.SerializeToString(deterministic=True)


async def singles(method: Callable[..., Awaitable[Any]], requests: list[Any]) -> list[Outcome]:
    """Each request sent on its own to ``method`` (a stub's single-call method)."""
    return [await single(method(r, timeout=10)) for r in requests]


def batch_outcomes(reply: Any) -> list[Outcome]:
    return [outcome(r) for r in reply.results]


async def whole_call_error(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()
