"""The model version a request pins, shared by the stage services."""

from __future__ import annotations

from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry, VersionNotAvailable
from serving.errors import NotFound


async def pinned_model(registry: ModelRegistry, version: str = "") -> Model:
    """The model for `version` (empty = the registry's current one); one neither loaded nor on disk is the
    caller's mistake: NOT_FOUND naming it."""
    try:
        return await registry.get(version)
    except VersionNotAvailable as e:
        raise NotFound(str(e)) from e
