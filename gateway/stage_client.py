"""One stage's RPC as the gateway makes it: alone, or batched with others (gateway/batching.py), and how a
stage's failure becomes the gateway's error.

- ``InvalidArgument`` / ``NotFound``: the service refused the input (the caller's mistake, 400/404);
- ``UpstreamDeadline`` (a ``DeadlineExceeded``): the deadline passed, or there was no time left to make the call;
- ``UpstreamError`` (an ``Unavailable``): anything else (down, overloaded, no model loaded yet, an internal error
  upstream): the gateway degrades, or answers 503 when no useful answer exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from gateway.batching import Batcher, Member
from recmesh.v1 import batch_pb2
from serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RecmeshError,
    Unavailable,
    details_of_trailer,
)
from serving.logs import REQUEST_ID_KEY, outgoing_metadata
from serving.tracing import batch_span

log = logging.getLogger(__name__)

_CALLER_MISTAKES: dict[grpc.StatusCode, type[RecmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


class UpstreamError(Unavailable):
    """A hop failed for a reason that is not the caller's: the gateway degrades, or answers 503."""

    def __init__(self, service: str, code: str, details: str) -> None:
        # The caller sees which stage and the status; upstream details (addresses, internals) go to the log.
        super().__init__(f"{service} unavailable ({code})")
        self.service, self.code, self.details = service, code, details


class UpstreamDeadline(DeadlineExceeded):
    """A hop ran out of time (gRPC DEADLINE_EXCEEDED, or no budget left to call it)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} deadline exceeded")
        self.service, self.code = service, "DEADLINE_EXCEEDED"


_CODE_OF_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _error(service: str, code: grpc.StatusCode, details: str, log_it: bool = True) -> RecmeshError:
    """The gateway's error for a stage's status (of a call, or of one member of a batch call)."""
    if code in _CALLER_MISTAKES:
        return _CALLER_MISTAKES[code](details or f"{service}: {code.name}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UpstreamDeadline(service)
    if log_it:
        log.warning("%s call failed: %s: %s", service, code.name, details)
    return UpstreamError(service, code.name, details)


Req = TypeVar("Req")
Reply = TypeVar("Reply")
Out = TypeVar("Out")


class StageClient(Generic[Req, Reply, Out]):
    """One stage's RPC: a request goes out alone (`single`) or with others (`batch`, see gateway/batching.py);
    its reply is turned into the caller's value by `parse` either way."""

    def __init__(
        self,
        service: str,
        single: Any,  # the stub's unary method, e.g. stub.Rank
        batch: Any,  # its batch method, e.g. stub.BatchRank
        batch_request: Callable[..., Any],  # e.g. BatchRankRequest
        parse: Callable[[Reply], Out],
        batching: bool,
        max_in_flight: int,
    ) -> None:
        self.service = service
        self._single, self._batch, self._batch_request, self._parse = single, batch, batch_request, parse
        self.batcher: Batcher[Req, Out] | None = None
        if batching:
            self.batcher = Batcher(self._send, lambda: UpstreamDeadline(service), max_in_flight)

    @classmethod
    def of(
        cls,
        service: str,
        stub: Any,
        method: str,
        messages: Any,
        parse: Callable[[Any], Out],
        batching: bool,
        max_in_flight: int,
    ) -> StageClient[Any, Any, Out]:
        """The client of `stub`'s `method` and its `Batch<method>` (request class from the `messages` module)."""
        batch_request = getattr(messages, f"Batch{method}Request")
        single, batch = getattr(stub, method), getattr(stub, f"Batch{method}")
        return cls(service, single, batch, batch_request, parse, batching, max_in_flight)

    async def call(self, request: Req, timeout_s: float) -> Out:
        if timeout_s <= 0:
            raise UpstreamDeadline(self.service)
        if self.batcher is not None:
            return await self.batcher.call(request, timeout_s)
        return await self._call_single(request, timeout_s, outgoing_metadata())

    async def _call_single(self, request: Req, timeout_s: float, metadata: Any) -> Out:
        try:
            reply = await self._single(request, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            error = _error(self.service, err.code(), err.details() or "")
            if isinstance(error, InvalidArgument):  # the stage named the fields at fault: pass them on
                error.violations = details_of_trailer(err.trailing_metadata())[0]
            raise error from err
        return self._parse(reply)

    async def _send(self, members: list[Member[Req, Out]]) -> None:
        """One RPC for `members`, each with what is left of its own deadline; resolves every member. A batch of one
        is the single RPC: the same answer, without the batch's envelope on either side. Tracing on, the RPC's spans
        go in the first member's trace, linked to the others' (serving.tracing.batch_span)."""
        if members[0].trace is None:  # tracing off
            return await self._send_now(members)
        with batch_span(self.service, [m.trace for m in members]):
            await self._send_now(members)

    async def _send_now(self, members: list[Member[Req, Out]]) -> None:
        now = asyncio.get_running_loop().time()
        if len(members) == 1:
            (member,) = members
            metadata = ((REQUEST_ID_KEY, member.request_id),) if member.request_id else ()
            try:
                member.resolve(await self._call_single(member.request, member.remaining_s(now), metadata))
            except RecmeshError as e:
                member.resolve(e)
            return
        request = self._batch_request(
            requests=[m.request for m in members],
            members=[
                batch_pb2.BatchMember(request_id=m.request_id, timeout_ms=max(1, int(m.remaining_s(now) * 1000)))
                for m in members
            ],
        )
        timeout_s = max(m.remaining_s(now) for m in members)
        try:
            reply = await self._batch(request, timeout=timeout_s, metadata=((REQUEST_ID_KEY, members[0].request_id),))
        except grpc.aio.AioRpcError as err:  # the whole call failed (after the channel's retries): all members did
            code, details = err.code(), err.details() or ""
            for i, member in enumerate(members):
                member.resolve(_error(self.service, code, details, log_it=i == 0))
            return
        if len(reply.results) != len(members):
            for member in members:
                member.resolve(UpstreamError(self.service, "INTERNAL", f"{len(reply.results)} results"))
            return
        for member, result in zip(members, reply.results, strict=True):
            if result.HasField("error"):
                code = _CODE_OF_NUMBER.get(result.error.code, grpc.StatusCode.UNKNOWN)
                member.resolve(_error(self.service, code, result.error.message))
                continue
            try:
                member.resolve(self._parse(result.response))
            except RecmeshError as e:
                member.resolve(e)
