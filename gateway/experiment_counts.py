"""Experiments' counters: impressions per variant, counted in process and flushed to Redis every second.

Every answer served in an experiment counts one impression for its variant. Counting is a dict increment (no
I/O on the request path); ``run()`` flushes the pending counts every FLUSH_EVERY_S with one MULTI/EXEC pipeline
of HINCRBY on ``recmesh:experiments:{name}:counts`` (field ``{variant}:impressions``, see
:mod:`recmesh.experiments.attribution`) and once more when cancelled (shutdown). Events are attributed by the
event store's script (:mod:`gateway.event_store`); both have Prometheus twins here:
``recmesh_experiment_impressions_total{experiment, variant}`` and
``recmesh_experiment_events_total{experiment, variant, type}``.

A flush Redis refuses (down, full) keeps its counts for the next one; a flush that timed out drops them (Redis
may have applied it: never counted twice, like events). So the report's impressions may miss at most a
second's worth per timed-out flush, and those of a process killed without its shutdown flush.

Usage::

    counts = ExperimentCounts(store.writer)                # the store Redis (REDIS_URL)
    task = asyncio.create_task(counts.run())               # flush every second; cancel -> one last flush
    counts.count_impression("ranker-test", "control")      # per answer served in an experiment
    await counts.flush()                                   # now (tests, shutdown)

    # the event store attributes only experiments and variants the config names (not any well-formed id)
    store = EventStore.from_url(url, attribute=attribution_within(lambda: experiments.config))
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable

import redis.asyncio as redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recmesh.experiments.attribution import IMPRESSIONS, counts_field, parse_recommendation_id
from recmesh.experiments.config import ExperimentSet
from recmesh.redis_layout import experiment_counts_key

FLUSH_EVERY_S = 1.0
FLUSH_TIMEOUT_S = 1.0

log = logging.getLogger(__name__)


class ExperimentMetrics:
    """The experiments' Prometheus counters, registered in one registry (serving.metrics' convention: tests pass
    ``ExperimentMetrics(CollectorRegistry())`` for counters of their own)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        counter = functools.partial(Counter, registry=registry)
        self.impressions = counter(
            "recmesh_experiment_impressions",
            "Answers served in an A/B experiment, by experiment and variant.",
            ["experiment", "variant"],
        )
        self.events = counter(
            "recmesh_experiment_events",
            "Events attributed to an A/B experiment's variant (stored ones only: a retried event counts once), "
            "by experiment, variant and event type.",
            ["experiment", "variant", "type"],
        )


DEFAULT_METRICS = ExperimentMetrics()


class ExperimentCounts:
    """In-process impression counters of the experiments, flushed to Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        metrics: ExperimentMetrics = DEFAULT_METRICS,
        every_s: float = FLUSH_EVERY_S,
        timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        if every_s <= 0 or timeout_s <= 0:
            raise ValueError(f"every_s and timeout_s must be > 0, got {every_s} and {timeout_s}")
        self.redis = client
        self.metrics = metrics
        self.every_s = every_s
        self.timeout_s = timeout_s
        # (experiment, variant) -> impressions not flushed yet; bounded by the variants of the configured experiments
        self._pending: collections.Counter[tuple[str, str]] = collections.Counter()

    def count_impression(self, experiment: str, variant: str) -> None:
        """One answer served in ``experiment`` with ``variant``: no I/O, flushed later."""
        self._pending[(experiment, variant)] += 1
        self.metrics.impressions.labels(experiment, variant).inc()

    @property
    def pending(self) -> int:
        """Impressions counted but not flushed yet."""
        return sum(self._pending.values())

    async def flush(self) -> int:
        """Write the pending impressions in one pipeline; the number written (0 when there were none or Redis
        failed: see the module docstring for what is kept)."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, collections.Counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.redis.pipeline(transaction=True) as pipe:  # all or nothing
                    for (experiment, variant), n in batch.items():
                        pipe.hincrby(experiment_counts_key(experiment), counts_field(variant, IMPRESSIONS), n)
                    await pipe.execute()
        except (RedisTimeoutError, TimeoutError) as e:
            log.warning("experiment impressions dropped: redis did not answer in time (%s)", type(e).__name__)
            return 0
        except (RedisError, OSError) as e:
            self._pending.update(batch)  # not applied: the next flush writes them
            log.warning("experiment impressions kept for the next flush: redis unavailable (%s)", e)
            return 0
        return sum(batch.values())

    async def run(self) -> None:
        """Flush every ``every_s`` until cancelled, then once more (the counts of the last second)."""
        try:
            while True:
                await asyncio.sleep(self.every_s)
                await self.flush()
        except asyncio.CancelledError:
            await self.flush()
            raise


def attribution_within(config: Callable[[], ExperimentSet]) -> Callable[[str], tuple[str, str] | None]:
    """An event store's ``attribute``: a recommendation id's (experiment, variant) when the current ``config``
    names both, else None; so a forged or stale id creates no counts hash. An experiment stopped but still in the
    config keeps counting the events of answers it served."""

    def attribute(session_id: str) -> tuple[str, str] | None:
        found = parse_recommendation_id(session_id)
        if found is None:
            return None
        experiment = config().find(found[0])
        return found if experiment is not None and experiment.variant(found[1]) is not None else None

    return attribute
