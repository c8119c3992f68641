"""Fixtures of the gateway tests: the three stage services and one gateway in front of them, once per session.

Tests that need a gateway of their own (a stage down, other settings) start one with
``harness.running_gateway(models_dir, redis_url, stage_ports, **settings)``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.gateway.harness import STAGES, Gateway, running_gateway, start_stage

TEARDOWN_S = 15.0


async def stop_within(step: Awaitable[object], what: str, seconds: float = TEARDOWN_S) -> None:
    """Await a session fixture's teardown step, but not forever: grpc.aio's shutdown has been seen to hang once in
    many runs (grpc/grpc#22365, #40989), after every test passed; a hang is reported here and the session ends."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        print(f"\nwarning: {what} did not stop within {seconds:.0f} s; left behind", file=sys.stderr)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stage_ports(models_dir: Path, redis_server) -> AsyncIterator[dict[str, int]]:  # type: ignore[no-untyped-def]
    """The three real stage services on loopback: {"embedding_store": port, ...}."""
    started = {name: await start_stage(name, models_dir, redis_server.url) for name in STAGES}
    yield {name: stage.port for name, stage in started.items()}
    for name, stage in started.items():
        await stop_within(stage.stop(), f"the {name} service")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gateway(models_dir: Path, redis_server, stage_ports: dict[str, int]) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    """The gateway with its default settings (weights view=1, click=1.5, add_to_cart=2, purchase=3)."""
    running = running_gateway(models_dir, redis_server.url, stage_ports)
    yield await running.__aenter__()
    await stop_within(running.__aexit__(None, None, None), "the session's gateway")


@pytest.fixture(scope="session")
def session_items(model) -> list[str]:  # type: ignore[no-untyped-def]
    """A plausible session: a few items that follow each other in the catalogue's popularity order."""
    rows, _ = model.popular(40)
    return [model.item_ids[r] for r in rows[[3, 17, 5, 29, 11]]]
