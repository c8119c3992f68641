"""Opportunistic batching of one stage's calls: while a batch is in flight, the calls that arrive wait; when it
returns, everything that waited goes out as the next batch, in one RPC.

No timer: at low load a call goes out at once, alone (a batch of one, sent from the caller's own task as the
stage's single RPC); under load batches grow by themselves, and
the per-call cost of gRPC (framing, syscalls, wake-ups, both sides) is paid once per batch instead of once per
request. This is how Triton and TF Serving amortise per-call cost, without their batching delay.

Each member keeps its own deadline, request id, trace context (tracing on) and outcome: a member whose deadline
passes fails alone with UpstreamDeadline (its batch goes on without it, and it is left out of a batch that has not
gone out yet); an error the service reports for one member fails only that member.

    batcher = Batcher(send_batch, on_deadline=lambda: UpstreamDeadline("ranking"), max_in_flight=1)
    reply = await batcher.call(request, timeout_s=0.15)   # send_batch(members) resolves every member's future
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from serving.logs import get_request_id
from serving.tracing import current_context

Req = TypeVar("Req")
Res = TypeVar("Res")

MAX_BATCH = 64  # members per RPC (services take up to limits.MAX_BATCH_MEMBERS): bounds a message and a turn


@dataclass(eq=False)
class Member(Generic[Req, Res]):
    """One caller's request inside a batch."""

    request: Req
    deadline: float  # the event loop's clock
    future: asyncio.Future[Res]
    request_id: str = ""
    trace: Any = None  # the caller's OpenTelemetry context (serving.tracing; None when off)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def remaining_s(self, now: float) -> float:
        return self.deadline - now

    def resolve(self, result: Res | BaseException) -> None:
        """Set the outcome unless the member already ended (deadline passed, caller cancelled)."""
        if self.future.done():
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class Batcher(Generic[Req, Res]):
    """Queues one stage's calls and sends them in batches, at most `max_in_flight` batches at a time."""

    def __init__(
        self,
        send: Callable[[list[Member[Req, Res]]], Awaitable[None]],
        on_deadline: Callable[[], BaseException],
        max_in_flight: int = 1,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._send = send
        self._on_deadline = on_deadline
        self.max_in_flight = max(1, max_in_flight)
        self.max_batch = max(1, max_batch)
        self._queue: deque[Member[Req, Res]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # RPCs sent, for tests and metrics
        self.members = 0

    async def call(self, request: Req, timeout_s: float) -> Res:
        """The stage's answer to `request`; `on_deadline()` is raised once `timeout_s` has passed."""
        if timeout_s <= 0:
            raise self._on_deadline()
        loop = asyncio.get_running_loop()
        member: Member[Req, Res] = Member(
            request, loop.time() + timeout_s, loop.create_future(), get_request_id() or "", current_context()
        )
        member.timer = loop.call_at(member.deadline, self._expire, member)
        self._queue.append(member)
        if self._in_flight < self.max_in_flight:
            batch = self._start()
            if batch == [member]:  # alone: sent from the caller's own task, no extra trip through the loop
                try:
                    async with asyncio.timeout_at(member.deadline):  # nobody else waits on it: cancel it when late
                        await self._run(batch)
                except TimeoutError:
                    member.resolve(self._on_deadline())
            elif batch:
                self._spawn(batch, loop)
        try:
            return await member.future
        finally:
            member.timer.cancel()

    def _expire(self, member: Member[Req, Res]) -> None:
        member.resolve(self._on_deadline())

    def _start(self) -> list[Member[Req, Res]]:
        """The next batch, counted in flight from now: what waits, up to max_batch, skipping members that ended."""
        batch: list[Member[Req, Res]] = []
        while self._queue and len(batch) < self.max_batch:
            member = self._queue.popleft()
            if not member.future.done():  # expired or cancelled while it waited: left out
                batch.append(member)
        if batch:
            self._in_flight += 1
            self.batches += 1
            self.members += len(batch)
        return batch

    def _spawn(self, batch: list[Member[Req, Res]], loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Member[Req, Res]]) -> None:
        """Send a started batch; then start what waited meanwhile."""
        try:
            await self._send(batch)
        except Exception as e:  # the whole RPC failed: every member still waiting shares the outcome
            for member in batch:
                member.resolve(e)
        finally:  # cancelled (a lone call past its deadline): its member ends by its own deadline
            self._in_flight -= 1
            if self._queue:
                following = self._start()
                if following:
                    self._spawn(following, asyncio.get_running_loop())
