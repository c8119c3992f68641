"""The running A/B experiment, as the gateway serves it: follow Redis' ``recmesh:experiments``, assign requests.

The document (recmesh.experiments.config) is read once at start-up and then every EXPERIMENTS_REFRESH_MS in a
background task, like the version pointer (gateway/version_pointer.py). A new document that fails validation is
refused with ONE error log line (per distinct bad document) and the previous one keeps serving; a Redis that does
not answer keeps the last one too; a missing key means no experiment. A document refused only because a variant's
model version is not on disk yet is checked again when the servable versions change.

Assignment is pure arithmetic on the in-memory document (recmesh.experiments.assign, about 1 µs), so every
replica puts a visitor in the same variant with no coordination.

    experiments = Experiments.from_redis(store_client, available_versions=lambda: set(list_versions(models_dir)))
    await experiments.load_now()                              # start-up
    task = asyncio.create_task(experiments.run())             # then every second; cancel to stop
    assignment = experiments.assign(user_id="u1", session_id="s9")   # Assignment(...) or None
    options = merge_options(request_options, assignment.options)     # recmesh.experiments.config
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from recmesh.experiments.assign import bucket, unit_id, variant_index
from recmesh.experiments.config import ExperimentConfig, ExperimentConfigError, ExperimentSet, parse_config
from recmesh.redis_layout import EXPERIMENTS_KEY
from serving.errors import InvalidArgument

log = logging.getLogger(__name__)

EXPERIMENTS_REFRESH_MS = 1000
READ_TIMEOUT_S = 1.0  # one GET; a slower Redis counts as down (the last document keeps serving)
FORCED_VARIANT_FIELD = "forced_variant"


@dataclass(frozen=True)
class Assignment:
    """A request's place in the running experiment. Shared by every request of the variant: read-only."""

    experiment: str
    variant: str
    options: Mapping[str, Any]  # the variant's options (validated, REST names); empty for a holdout
    holdout: bool  # answer popular items only


@dataclass(frozen=True)
class _Serving:
    """The running experiment and one prepared Assignment per variant, swapped as one value."""

    experiment: ExperimentConfig | None = None
    assignments: tuple[Assignment, ...] = ()


Reader = Callable[[], Awaitable[bytes | str | None]]


class Experiments:
    """The experiments document followed from Redis, and the assignment of requests to the running one."""

    def __init__(
        self,
        read: Reader,
        available_versions: Callable[[], set[str]] | None = None,
        refresh_s: float = EXPERIMENTS_REFRESH_MS / 1000,
    ) -> None:
        self._read = read
        self._available_versions = available_versions
        self._refresh_s = refresh_s
        self._config = ExperimentSet()
        self._serving = _Serving()
        self._checked: tuple[bytes | str | None, frozenset[str] | None] | None = None  # last input validated
        self._redis_down = False

    @classmethod
    def from_redis(cls, client: redis.Redis, available_versions: Callable[[], set[str]] | None = None) -> Experiments:
        """Follow ``recmesh:experiments`` of the store ``client`` (REDIS_URL)."""

        async def read() -> bytes | str | None:
            value: bytes | str | None = await asyncio.wait_for(client.get(EXPERIMENTS_KEY), READ_TIMEOUT_S)
            return value

        return cls(read, available_versions)

    @property
    def running(self) -> ExperimentConfig | None:
        return self._serving.experiment

    @property
    def config(self) -> ExperimentSet:
        """The whole document in use (stopped experiments too)."""
        return self._config

    async def run(self) -> None:
        """Follow the key until cancelled."""
        while True:
            try:
                await self.load_now()
            except Exception:  # a bug here must not stop the follower: the last document keeps serving
                log.exception("experiments: refresh failed, keeping the configuration in use")
            await asyncio.sleep(self._refresh_s)

    async def load_now(self) -> None:
        """Read the key once and use it if it is new and valid."""
        try:
            raw = await self._read()
        except (RedisError, OSError, TimeoutError) as e:
            if not self._redis_down:
                log.warning(
                    "experiments: redis unavailable, keeping the configuration in use (%s)", str(e) or type(e).__name__
                )
            self._redis_down = True
            return
        if self._redis_down:
            log.info("experiments: redis answers again")
            self._redis_down = False
        versions = frozenset(self._available_versions()) if self._available_versions is not None else None
        if (raw, versions) == self._checked:
            return  # unchanged: nothing to parse, and a refused document is logged once
        self._checked = (raw, versions)
        try:
            config = ExperimentSet() if raw is None else parse_config(raw, None if versions is None else set(versions))
        except ExperimentConfigError as e:
            log.error(
                "experiments configuration refused, version %s keeps serving: %s",
                self._config.version,
                e,
                extra={"kept_version": self._config.version},
            )
            return
        self._use(config)

    def _use(self, config: ExperimentSet) -> None:
        running = config.running
        changed = config.version != self._config.version or running != self._serving.experiment
        assignments = (
            tuple(Assignment(running.name, v.name, v.options, v.holdout) for v in running.variants) if running else ()
        )
        self._config, self._serving = config, _Serving(running, assignments)
        if changed:
            log.info(
                "experiments configuration version %d: %s",
                config.version,
                f"running {running.name}" if running else "nothing running",
                extra={"experiment": running.name if running else ""},
            )

    def assign(self, user_id: str, session_id: str, forced_variant: str = "") -> Assignment | None:
        """The request's variant of the running experiment; None when nothing runs or the request has no id of
        the experiment's unit. ``forced_variant`` (QA) picks the variant, and must name one of the running
        experiment (InvalidArgument otherwise)."""
        serving = self._serving
        experiment = serving.experiment
        if forced_variant:
            return _forced(serving, forced_variant)
        if experiment is None:
            return None
        unit = unit_id(experiment.unit, user_id, session_id)
        if not unit:
            return None
        return serving.assignments[variant_index(experiment.bounds, bucket(experiment.name, unit))]


def _forced(serving: _Serving, name: str) -> Assignment:
    if serving.experiment is None:
        raise InvalidArgument(f"{FORCED_VARIANT_FIELD} {name!r}: no experiment is running", field=FORCED_VARIANT_FIELD)
    for assignment in serving.assignments:
        if assignment.variant == name:
            return assignment
    names = ", ".join(a.variant for a in serving.assignments)
    raise InvalidArgument(
        f"{FORCED_VARIANT_FIELD} {name!r} is not a variant of experiment {serving.experiment.name!r} ({names})",
        field=FORCED_VARIANT_FIELD,
    )
