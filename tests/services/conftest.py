"""Fixtures of the stage-service tests."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest


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
