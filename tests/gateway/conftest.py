"""Fixtures of the gateway tests: the three stage services and one gateway in front of them, once per session.

Tests that need a gateway of their own (a stage down, other settings) start one with
``harness.running_gateway(models_dir, redis_url, stage_ports, **settings)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.gateway.harness import STAGES, Gateway, running_gateway, start_stage


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stage_ports(models_dir: Path, redis_server) -> AsyncIterator[dict[str, int]]:  # type: ignore[no-untyped-def]
    """The three real stage services on loopback: {"embedding_store": port, ...}."""
    started = {name: await start_stage(name, models_dir, redis_server.url) for name in STAGES}
    yield {name: stage.port for name, stage in started.items()}
    for stage in started.values():
        await stage.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gateway(models_dir: Path, redis_server, stage_ports: dict[str, int]) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    """The gateway with its default settings (weights view=1, click=1.5, add_to_cart=2, purchase=3)."""
    async with running_gateway(models_dir, redis_server.url, stage_ports) as running:
        yield running


@pytest.fixture(scope="session")
def session_items(model) -> list[str]:  # type: ignore[no-untyped-def]
    """A plausible session: a few items that follow each other in the catalogue's popularity order."""
    rows, _ = model.popular(40)
    return [model.item_ids[r] for r in rows[[3, 17, 5, 29, 11]]]
