"""The loaded model versions of one process: at most two at a time, so a version switch never fails a request.

Every service asks the registry for the version a request pins (empty = current). A version that is on disk but
not loaded is loaded on demand, off the event loop; one that is not on disk is an error the caller maps to
NOT_FOUND. `watch` preloads new bundles as they appear so the switch costs no request a load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path

from recmesh import bundle
from recmesh.pipeline import Model, load_model

log = logging.getLogger(__name__)
KEEP = 2


class VersionNotAvailable(LookupError):
    """The requested model version is neither loaded nor in the models directory."""


class ModelRegistry:
    def __init__(self, models_dir: Path, pinned: str = "") -> None:
        self.models_dir = Path(models_dir)
        self.pinned = pinned
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._lock = asyncio.Lock()
        self.current = ""

    def load_initial(self) -> Model:
        """Blocking load at start-up: the pinned version, else the newest complete bundle."""
        model = load_model(bundle.resolve(self.models_dir, self.pinned))
        self._models[model.version] = model
        self.current = model.version
        return model

    @property
    def versions(self) -> list[str]:
        return list(self._models)

    async def get(self, version: str = "") -> Model:
        version = version or self.current
        model = self._models.get(version)
        if model is not None:
            return model
        async with self._lock:
            if version in self._models:
                return self._models[version]
            try:
                path = bundle.resolve(self.models_dir, version)
            except bundle.BundleError as e:
                raise VersionNotAvailable(f"model version {version!r} is not loaded here and not on disk") from e
            model = await asyncio.to_thread(load_model, path)
            self._add(model)
            return model

    def _add(self, model: Model) -> None:
        self._models[model.version] = model
        while len(self._models) > KEEP:
            oldest = next(v for v in self._models if v != self.current and v != model.version)
            del self._models[oldest]
            log.info("unloaded model version", extra={"version": oldest})

    async def watch(self, every_s: float = 2.0) -> None:
        """Preload the newest bundle when one appears and make it current (unless a version is pinned)."""
        while True:
            await asyncio.sleep(every_s)
            if self.pinned:
                continue
            versions = bundle.list_versions(self.models_dir)
            if versions and versions[-1] not in self._models:
                try:
                    await self.get(versions[-1])
                except Exception:  # a broken new bundle must not take down the one being served
                    log.exception("could not load new bundle", extra={"version": versions[-1]})
                    continue
            if versions and versions[-1] in self._models and self.current != versions[-1]:
                self.current = versions[-1]
                log.info("serving new model version", extra={"version": self.current})
