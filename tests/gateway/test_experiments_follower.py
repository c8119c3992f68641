"""The gateway's experiments follower (gateway/experiments.py) against the real session Redis (own db): it serves
the stored document, refuses a bad one with one error log line while the old one keeps serving, survives Redis
going away, and assigns (sticky, forced variant, holdout, nobody without an id)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from devtools.stack import free_port
from gateway.experiments import READ_TIMEOUT_S, Experiments
from recmesh.redis_layout import EXPERIMENTS_KEY
from serving.errors import InvalidArgument
from tests.helpers import redis_url

DB = 14
pytestmark = pytest.mark.asyncio(loop_scope="session")  # the client fixture lives in the session's loop


def document(version: int = 1, name: str = "ranker-test", status: str = "running", **variant: Any) -> str:
    treatment = {"name": "no-ranking", "share": 45, "options": {"skip_ranking": True}, **variant}
    return json.dumps(
        {
            "version": version,
            "experiments": [
                {
                    "name": name,
                    "status": status,
                    "unit": "visitor",
                    "variants": [
                        {"name": "control", "share": 50, "options": {}},
                        treatment,
                        {"name": "holdout", "share": 5, "holdout": True},
                    ],
                }
            ],
        }
    )


@pytest_asyncio.fixture
async def client(redis_server) -> AsyncIterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_url(redis_server, DB))
    await c.delete(EXPERIMENTS_KEY)
    yield c
    await c.delete(EXPERIMENTS_KEY)
    await c.aclose()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def logs() -> Iterator[Records]:
    """The follower's log records (its own handler: the gateway's logging setup may stop propagation)."""
    handler, logger = Records(), logging.getLogger("gateway.experiments")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_serves_the_stored_document_and_nothing_without_one(client: redis.Redis):
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    assert experiments.running is None and experiments.assign("u1", "s1") is None
    await client.set(EXPERIMENTS_KEY, document())
    await experiments.load_now()
    running = experiments.running
    assert running is not None and running.name == "ranker-test" and experiments.config.version == 1
    assignment = experiments.assign("u1", "s1")
    assert assignment is not None and assignment.experiment == "ranker-test"
    await client.delete(EXPERIMENTS_KEY)
    await experiments.load_now()
    assert experiments.running is None  # the key is gone: no experiment


async def test_assignment_is_sticky_and_by_the_experiments_unit(client: redis.Redis):
    await client.set(EXPERIMENTS_KEY, document())
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    seen = [experiments.assign(f"u{i}", "") for i in range(2000)]
    assert {a.variant for a in seen if a is not None} == {"control", "no-ranking", "holdout"}
    for i in range(200):
        assert experiments.assign(f"u{i}", "s-any") == experiments.assign(f"u{i}", "s-other")  # by visitor
    assert experiments.assign("", "s1") == experiments.assign("", "s1") is not None  # no user id: the session
    assert experiments.assign("", "") is None  # nobody to assign
    other = Experiments.from_redis(client)  # another replica
    await other.load_now()
    assert all(other.assign(f"u{i}", "") == experiments.assign(f"u{i}", "") for i in range(500))


async def test_variants_carry_their_options_and_the_holdout_flag(client: redis.Redis):
    await client.set(EXPERIMENTS_KEY, document())
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    treated = experiments.assign("u1", "", forced_variant="no-ranking")
    assert treated is not None and dict(treated.options) == {"skip_ranking": True} and not treated.holdout
    held = experiments.assign("u1", "", forced_variant="holdout")
    assert held is not None and held.holdout and dict(held.options) == {}


async def test_a_forced_variant_must_name_one_of_the_running_experiment(client: redis.Redis):
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    with pytest.raises(InvalidArgument, match="no experiment is running"):
        experiments.assign("u1", "", forced_variant="control")
    await client.set(EXPERIMENTS_KEY, document())
    await experiments.load_now()
    forced = experiments.assign("", "", forced_variant="control")  # QA: even with no id
    assert forced is not None and forced.variant == "control"
    with pytest.raises(InvalidArgument, match="'nope' is not a variant of experiment 'ranker-test'") as caught:
        experiments.assign("u1", "", forced_variant="nope")
    assert caught.value.violations[0].field == "forced_variant"


async def test_a_stopped_experiment_assigns_nobody(client: redis.Redis):
    await client.set(EXPERIMENTS_KEY, document(status="stopped"))
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    assert experiments.running is None and experiments.assign("u1", "s1") is None
    assert experiments.config.find("ranker-test") is not None


async def test_an_invalid_document_is_refused_once_and_the_old_one_keeps_serving(client: redis.Redis, logs: Records):
    await client.set(EXPERIMENTS_KEY, document(version=1))
    experiments = Experiments.from_redis(client)
    await experiments.load_now()
    before = [experiments.assign(f"u{i}", "") for i in range(100)]

    await client.set(EXPERIMENTS_KEY, b'{"version": 2, "experiments": [')  # not JSON
    for _ in range(3):
        await experiments.load_now()
    errors = logs.at(logging.ERROR)
    assert len(errors) == 1 and "version 1 keeps serving" in errors[0] and "not JSON" in errors[0]
    assert experiments.config.version == 1 and [experiments.assign(f"u{i}", "") for i in range(100)] == before

    await client.set(EXPERIMENTS_KEY, document(version=3, share=40))  # shares sum to 95
    for _ in range(3):
        await experiments.load_now()
    errors = logs.at(logging.ERROR)
    assert len(errors) == 2 and "shares must sum to exactly 100" in errors[1]
    assert experiments.config.version == 1 and [experiments.assign(f"u{i}", "") for i in range(100)] == before

    await client.set(EXPERIMENTS_KEY, document(version=4, options={"candidate_count": 50}))  # valid again
    await experiments.load_now()
    assert experiments.config.version == 4
    assert [a and a.variant for a in (experiments.assign(f"u{i}", "") for i in range(100))] == [
        a and a.variant for a in before
    ]  # options changed only: nobody moved
    assert len(logs.at(logging.ERROR)) == 2


async def test_a_model_version_not_servable_yet_is_checked_again_when_it_is(client: redis.Redis, logs: Records):
    servable = {"v1"}
    await client.set(EXPERIMENTS_KEY, document(options={"model_version": "v2"}))
    experiments = Experiments.from_redis(client, available_versions=lambda: set(servable))
    await experiments.load_now()
    await experiments.load_now()
    assert experiments.running is None and len(logs.at(logging.ERROR)) == 1
    assert "'v2' is not available" in logs.at(logging.ERROR)[0]
    servable.add("v2")  # the bundle arrives
    await experiments.load_now()
    assert experiments.running is not None


async def test_redis_down_keeps_the_last_document(client: redis.Redis, logs: Records):
    await client.set(EXPERIMENTS_KEY, document())
    port = free_port()  # nothing listens there
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    target = {"redis": client}
    experiments = Experiments(lambda: target["redis"].get(EXPERIMENTS_KEY))
    await experiments.load_now()
    assert experiments.running is not None
    target["redis"] = dead  # failure injection: the store goes away
    for _ in range(3):
        await experiments.load_now()
    assert experiments.running is not None and experiments.assign("u1", "") is not None
    assert len(logs.at(logging.WARNING)) == 1 and not logs.at(logging.ERROR)
    target["redis"] = client
    await experiments.load_now()
    assert any("answers again" in m for m in logs.at(logging.INFO))
    await dead.aclose()


async def test_a_redis_that_never_answers_in_time_leaves_nothing_running(client: redis.Redis):
    retrying = redis.Redis(host="127.0.0.1", port=free_port())  # the client's own retries outlast READ_TIMEOUT_S
    experiments = Experiments.from_redis(retrying)
    started = time.monotonic()
    await experiments.load_now()  # no exception: the gateway starts without experiments
    assert time.monotonic() - started < READ_TIMEOUT_S + 1
    assert experiments.running is None and experiments.assign("u1", "s1") is None
    await retrying.aclose()


async def test_run_follows_changes_within_a_refresh(client: redis.Redis):
    experiments = Experiments(lambda: client.get(EXPERIMENTS_KEY), refresh_s=0.05)
    task = asyncio.create_task(experiments.run())
    try:
        await client.set(EXPERIMENTS_KEY, document(version=7, name="live-one"))
        for _ in range(100):
            if experiments.running is not None:
                break
            await asyncio.sleep(0.02)
        assert experiments.running is not None and experiments.running.name == "live-one"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
