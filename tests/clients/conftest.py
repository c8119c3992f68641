"""One real stack (Redis, the three services, the gateway as processes, `recmesh up`'s runner) for the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stack import LocalStack
from tests.helpers import sample_sessions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def stack(bundle_path: Path) -> Iterator[LocalStack]:
    with LocalStack(bundle_path.parent) as running:
        yield running


@pytest.fixture(scope="package")
def session() -> list[str]:
    """Five items of a session the fixture bundle was trained on."""
    return sample_sessions(1)[0][:5]
