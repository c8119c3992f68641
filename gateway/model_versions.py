"""The model versions the gateway knows of: which one is current, each one's manifest, catalogue and popular items.

The gateway builds query vectors (it needs each version's ``params.query_decay`` and ``dim``), answers with
popular items when there is nothing to query with or candidate generation is down, and tells RecordEvent whether
an item is in the current catalogue. It reads only ``manifest.json``, ``items.txt`` and the popularity array of
``tables.npz`` - never vectors or indexes - once per version, lazily, and keeps the last few versions.

    versions = ModelVersions(models_dir)
    info = versions.get("")                      # the current version (pinned, else published, else newest)
    info.query_decay, info.dim
    items = await info.items()                   # catalogue + popularity, loaded off the event loop once
    items.popular(10, exclude={"a", "b"})        # (["x", ...], [1.0, 0.93, ...])
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recmesh import bundle
from recmesh.publish import published_on_disk
from serving import limits
from serving.errors import NotFound, Unavailable

KEEP_VERSIONS = 3
LIST_EVERY_S = 2.0  # how often "the current version" looks at the models directory again


@dataclass(frozen=True)
class CatalogItems:
    """A version's item ids, most popular first (stable order, as ``Model.popular``)."""

    item_ids: list[str]
    known: frozenset[str]
    popular_ids: list[str]  # every item, most popular first
    popular_scores: list[float]  # popularity / max popularity

    def popular(
        self,
        k: int,
        exclude: set[str] | frozenset[str] = frozenset(),
        passes: Callable[[list[str]], np.ndarray] | None = None,
    ) -> tuple[list[str], list[float]]:
        """The k most popular items not in ``exclude`` (and, with ``passes``, for which it is true: a filter,
        asked a chunk of ids at a time), with their normalised popularity."""
        ids: list[str] = []
        scores: list[float] = []
        chunk = max(4 * k, 64)
        for start in range(0, len(self.popular_ids), chunk):
            items = self.popular_ids[start : start + chunk]
            ok = passes(items) if passes is not None else np.ones(len(items), dtype=bool)
            for item, score, passing in zip(items, self.popular_scores[start : start + chunk], ok, strict=True):
                if passing and item not in exclude:
                    ids.append(item)
                    scores.append(score)
                    if len(ids) >= k:
                        return ids, scores
        return ids, scores


def load_items(directory: Path) -> CatalogItems:
    item_ids = (directory / "items.txt").read_text().split("\n")
    with np.load(directory / "tables.npz", allow_pickle=False) as tables:
        popularity = np.asarray(tables["popularity"], dtype=np.float64)
    order = np.argsort(-popularity, kind="stable")
    scores = popularity[order] / max(float(popularity.max(initial=0.0)), 1.0)
    return CatalogItems(item_ids, frozenset(item_ids), [item_ids[i] for i in order], scores.tolist())


class VersionInfo:
    """One version as the gateway sees it: the manifest now, the catalogue on first use."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.dim = int(manifest["dim"])
        self.query_decay = float(manifest["params"]["query_decay"])
        self.default_candidates = int(manifest["params"].get("candidates", limits.DEFAULT_CANDIDATE_COUNT))
        self.default_recipe = str(manifest.get("sources", {}).get("default_recipe", ""))  # "" = ANN alone
        self._items: CatalogItems | None = None
        self._lock = asyncio.Lock()

    async def items(self) -> CatalogItems:
        if self._items is None:
            async with self._lock:
                if self._items is None:
                    self._items = await asyncio.to_thread(load_items, self.directory)
        return self._items


class ModelVersions:
    """The bundles of ``models_dir`` as the gateway needs them, cached per version."""

    def __init__(self, models_dir: Path, pinned: str = "") -> None:
        self.models_dir = Path(models_dir)
        self.pinned = pinned
        self._infos: OrderedDict[str, VersionInfo] = OrderedDict()
        self._newest = ""
        self._listed_at = -float("inf")
        self._published: str | None = None

    def set_published(self, version: str | None) -> None:
        """The version ``recmesh publish`` pointed Redis at (None = none); used once it is on disk."""
        if version and not (self.models_dir / version / bundle.MANIFEST).is_file():
            version = None
        self._published = version

    def current_version(self) -> str:
        """The pinned version, else the published one (Redis' pointer, as the embedding store serves), else the
        one the pointer file next to the bundles names (Redis unreachable since start-up), else the newest
        complete bundle on disk (re-listed every few seconds, as the services' registries choose)."""
        if self.pinned:
            return self.pinned
        if self._published:
            return self._published
        now = time.monotonic()
        if now - self._listed_at > LIST_EVERY_S:
            versions = bundle.list_versions(self.models_dir)
            on_disk = published_on_disk(self.models_dir)
            self._newest = on_disk if on_disk in versions else (versions[-1] if versions else "")
            self._listed_at = now
        if not self._newest:
            raise Unavailable(f"no model bundle in {self.models_dir}")
        return self._newest

    def get(self, version: str = "") -> VersionInfo:
        """The version's manifest (empty = current). NotFound if it is not on disk. Reads one small file the
        first time a version is asked for."""
        version = version or self.current_version()
        info = self._infos.get(version)
        if info is not None:
            return info
        try:
            directory = bundle.resolve(self.models_dir, version)
            info = VersionInfo(directory, bundle.load_manifest(directory, verify=False))
        except bundle.BundleError as e:
            raise NotFound(f"model version {version!r} is not available: {e}") from e
        self._infos[version] = info
        while len(self._infos) > KEEP_VERSIONS:
            self._infos.popitem(last=False)
        return info

    async def known(self, item_ids: list[str]) -> list[bool]:
        """Whether the current version's catalogue has each item (all True when no bundle can be read)."""
        try:
            items = await self.get().items()
        except (NotFound, Unavailable):
            return [True] * len(item_ids)
        return [item in items.known for item in item_ids]
