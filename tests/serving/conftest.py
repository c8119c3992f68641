"""Fixtures of the serving-kit tests (the fakes themselves are in fake_servicers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.serving.fake_servicers import Running, running_server


@pytest_asyncio.fixture(loop_scope="session")
async def running() -> AsyncIterator[Running]:
    """A fresh FakeStore + FakeEvents server with its own metrics registry, and a channel to it."""
    async with running_server() as served:
        yield served
