"""Deadline bookkeeping for one request: what is left of its budget, and how long each stage took.

    budget = Budget(200)                       # ms, starts now
    budget = Budget.within(200, 0.15)          # or cut to the caller's own deadline (gRPC: 150 ms left)
    with budget.stage("embeddings"):
        reply = await client.get(..., timeout_s=budget.remaining_s())
    budget.finish()                            # records "total"
    budget.server_timing()                     # "embeddings;dur=1.2, total;dur=1.4"

Each hop's deadline is what is left of the request's budget minus a small reserve for building the answer.

Time spent queued counts: a budget starts when the request arrived, not when its handler got the CPU. The REST
edge (gateway/edge.py) sets :data:`arrived_at` for the request's task (its estimate of when the request's bytes
arrived); a Budget built in that task starts then, so "total" includes the queueing and the hops get what is left.

    token = arrived_at.set(time.perf_counter() - 0.040)   # the request waited 40 ms before we saw it
    Budget(200).remaining_ms()                            # ~158 (reserve 2 ms)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# perf_counter() when the current request arrived (None: unknown, the budget starts when it is built).
arrived_at: ContextVar[float | None] = ContextVar("recmesh_arrived_at", default=None)

RESERVE_MS = 2.0  # kept back from every hop's deadline for answering
MIN_HOP_MS = 0.5  # below this, a hop cannot finish: the budget is exhausted


class Budget:
    """A request's time budget (wall clock, monotonic) and its per-stage timings in milliseconds."""

    __slots__ = ("budget_ms", "reserve_ms", "_start", "timings")

    def __init__(self, budget_ms: float, reserve_ms: float = RESERVE_MS, started: float | None = None) -> None:
        self.budget_ms = float(budget_ms)
        # A tiny budget keeps most of itself for the hops rather than reserving more than it has.
        self.reserve_ms = min(reserve_ms, self.budget_ms / 10)
        # From the request's arrival when the edge knows it (queue time is spent from the budget), else now.
        if started is None:
            started = arrived_at.get()
        self._start = time.perf_counter() if started is None else started
        self.timings: dict[str, float] = {}

    @classmethod
    def within(cls, budget_ms: float, caller_deadline_s: float | None = None) -> Budget:
        """A budget of ``budget_ms``, cut to what is left of the caller's own deadline (None = it has none)."""
        if caller_deadline_s is not None:
            budget_ms = max(0.0, min(budget_ms, caller_deadline_s * 1000.0))
        return cls(budget_ms)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._start) * 1000.0

    def remaining_ms(self) -> float:
        """Milliseconds a hop may still take (never negative)."""
        return max(0.0, self.budget_ms - self.reserve_ms - self.elapsed_ms())

    def remaining_s(self) -> float:
        """The deadline (in seconds) to give the next hop."""
        return self.remaining_ms() / 1000.0

    @property
    def exhausted(self) -> bool:
        return self.remaining_ms() < MIN_HOP_MS

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (added to an earlier timing of the same name)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

    def finish(self) -> dict[str, float]:
        """Record the "total" stage (time since the budget started) and return all timings."""
        self.timings["total"] = self.elapsed_ms()
        return self.timings

    def server_timing(self) -> str:
        """The timings as a ``Server-Timing`` header value: ``embeddings;dur=1.2, total;dur=3.9``."""
        return server_timing(self.timings)


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())
