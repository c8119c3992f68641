"""Fixtures of the stage-service tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from recmesh import publish as pub
from serving import batch
from tests.helpers import redis_url


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType, str], list[dict[str, Any]]]:
    """``calls = spy(core, "validate_query")``: from now on, the keyword arguments of every call of it."""

    def watch(module: ModuleType, name: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        original = getattr(module, name)

        def recording(*args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)
        return calls

    return watch


@pytest.fixture
def late_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch members' clock (serving.batch.clock) moves 10 s on each reading: every member with a timeout_ms
    is out of time when it is checked, the others never are."""
    ticks = itertools.count(time.monotonic(), 10.0)
    monkeypatch.setattr(batch, "clock", lambda: next(ticks))


@pytest.fixture
def url(redis_server, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    """The URL of the test module's own Redis database (its module-level ``DB``) of the session `redis_server`."""
    return redis_url(redis_server, request.module.DB)


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    """A client of that database, flushed before and after the test."""
    c = redis.Redis.from_url(url)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


@pytest.fixture
def published(bundle_path: Path, url: str, client: redis.Redis) -> str:
    """The session bundle published into that database; its version."""
    return pub.publish(bundle_path, url, progress=False)
