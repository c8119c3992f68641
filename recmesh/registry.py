"""The loaded model versions of one process, and the only place a process loads one.

A request never causes a load. Loads happen at start (:meth:`ModelRegistry.load_initial`) and when the process'
version pointer moves (:meth:`ModelRegistry.switch_to`): ``<models dir>/PUBLISHED`` (written by ``recmesh
publish``), else the newest complete bundle, for candidate generation and ranking (:meth:`watch`); Redis'
pointer for the embedding store, which calls ``switch_to`` itself.

A request may pin only a version the registry holds (:attr:`pinnable`):

- the current one (what the pointer names),
- the previous one (what was served before the last flip: a rollout or rollback in progress),
- a version retired by a later flip, for ``linger_s`` after that flip and as long as a request holds a lease on it
  (so a request already under way, whose hops pinned it, finishes with it).

Anything else is :class:`VersionNotAvailable` (NOT_FOUND to the caller, naming the pinnable versions), answered
without touching the bundle. One exception keeps a flip from failing requests: a version the pointer on disk names
but this process has not noticed yet (a later hop pinned it because an earlier one already serves it) is switched
to right away, which is the load the flip causes anyway.

A bundle that cannot be loaded (corrupt, half-written, tampered, paths outside the bundle) is refused with one log
line; the version served keeps answering and the load is retried with a growing delay (``retry_s`` doubling up to
``MAX_RETRY_S``), so a bundle finished later is picked up.

    registry = ModelRegistry(Path("models"))
    registry.load_initial()                      # blocking, at start
    model = await registry.get("")               # the current version; get(v) for a pinned one
    async with registry.lease(version) as model: # held: not dropped while in use
        ...
    await registry.switch_to("20261201T000000Z-1a2b3c4d")   # a pointer move: load (off the loop), make current
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from recmesh import bundle
from recmesh.pipeline import Model, load_model
from recmesh.publish import published_on_disk

log = logging.getLogger(__name__)
LINGER_S = 30.0  # a retired version stays pinnable this long: longer than any request's deadline
RETRY_S = 2.0  # first retry of a bundle that failed to load; doubles each failure
MAX_RETRY_S = 60.0


class VersionNotAvailable(LookupError):
    """The requested model version is not one a request may pin here (or it could not be loaded)."""


@dataclass
class _Entry:
    model: Model
    leases: int = 0
    retired_at: float | None = None  # set when a later flip retired it


@dataclass
class _Failure:
    error: str
    retry_at: float
    delay_s: float


@dataclass
class LoadCounter:
    """How many bundles this registry loaded (a test's and an operator's evidence that requests cause none)."""

    loads: int = 0
    failures: int = 0
    versions: list[str] = field(default_factory=list)


class ModelRegistry:
    def __init__(
        self, models_dir: Path, pinned: str = "", linger_s: float = LINGER_S, retry_s: float = RETRY_S
    ) -> None:
        self.models_dir = Path(models_dir)
        self.pinned = pinned
        self.linger_s = linger_s
        self.retry_s = retry_s
        self.current = ""
        self.previous = ""
        self.counter = LoadCounter()
        self._entries: dict[str, _Entry] = {}
        self._failures: dict[str, _Failure] = {}
        self._lock = asyncio.Lock()

    # -- what may be pinned ---------------------------------------------------------------------------
    @property
    def versions(self) -> list[str]:
        """The loaded versions (= the pinnable ones): current first, then previous, then retired ones."""
        order = [self.current, self.previous]
        return [v for v in order if v in self._entries] + [v for v in self._entries if v not in order]

    pinnable = versions

    def pointer_target(self) -> str:
        """What this process' pointer names: the pinned version, else ``<models dir>/PUBLISHED`` when it names a
        complete bundle, else the newest complete bundle ("" when there is none)."""
        if self.pinned:
            return self.pinned
        published = published_on_disk(self.models_dir)
        if published and (self.models_dir / published / bundle.MANIFEST).is_file():
            return published
        versions = bundle.list_versions(self.models_dir)
        return versions[-1] if versions else ""

    # -- loading --------------------------------------------------------------------------------------
    def load_initial(self) -> Model:
        """Blocking load at start-up: the version :meth:`pointer_target` names. BundleError when it is broken."""
        model = self._load(bundle.resolve(self.models_dir, self.pointer_target()))
        self._entries[model.version] = _Entry(model)
        self.current = model.version
        return model

    def _load(self, path: Path) -> Model:
        model = load_model(path)
        self.counter.loads += 1
        self.counter.versions.append(model.version)
        return model

    async def switch_to(self, version: str) -> Model:
        """The pointer moved to ``version``: load it unless held (off the event loop, one load at a time) and make
        it current; the old current becomes the previous one. VersionNotAvailable when it cannot be loaded (logged
        once per version; retried only after a growing delay)."""
        entry = self._entries.get(version)
        if entry is None:
            async with self._lock:
                entry = self._entries.get(version)
                if entry is None:
                    entry = _Entry(await self._load_or_refuse(version))
                    self._entries[version] = entry
        if version != self.current:
            before = self.previous
            self.previous, self.current = self.current, version
            entry.retired_at = None  # a rollback to a lingering version keeps it
            if before and before not in (self.current, self.previous) and before in self._entries:
                self._entries[before].retired_at = time.monotonic()
            log.info("serving model version", extra={"version": version, "previous": self.previous})
        self.expire()
        return entry.model

    async def _load_or_refuse(self, version: str) -> Model:
        failure = self._failures.get(version)
        now = time.monotonic()
        if failure is not None and now < failure.retry_at:
            raise VersionNotAvailable(
                f"model version {version!r} cannot be loaded here: {failure.error}; pinnable: {self._pinnable_text()}"
            )
        try:
            model = await asyncio.to_thread(lambda: self._load(bundle.resolve(self.models_dir, version)))
        except Exception as e:  # noqa: BLE001 - any broken bundle is refused, the served version keeps answering
            self.counter.failures += 1
            delay = min(MAX_RETRY_S, failure.delay_s * 2) if failure else self.retry_s
            self._failures[version] = _Failure(str(e), now + delay, delay)
            if failure is None:  # one line per broken version, not one per retry
                log.warning(
                    "model bundle refused, still serving the current version",
                    extra={"version": version, "error": str(e), "serving": self.current, "retry_in_s": delay},
                )
            raise VersionNotAvailable(
                f"model version {version!r} cannot be loaded here: {e}; pinnable: {self._pinnable_text()}"
            ) from e
        if self._failures.pop(version, None) is not None:
            log.info("model bundle loads now", extra={"version": version})
        return model

    # -- requests -------------------------------------------------------------------------------------
    async def get(self, version: str = "") -> Model:
        """The model of ``version`` ("" = current). Never loads, except a version the pointer on disk names that
        this process has not switched to yet (see the module docstring). VersionNotAvailable otherwise."""
        version = version or self.current
        entry = self._entries.get(version)
        if entry is not None:
            return entry.model
        if not self.pinned and version == self.pointer_target():
            return await self.switch_to(version)
        raise VersionNotAvailable(f"model version {version!r} cannot be pinned here; pinnable: {self._pinnable_text()}")

    def _pinnable_text(self) -> str:
        return ", ".join(self.versions) or "none"

    @contextlib.asynccontextmanager
    async def lease(self, version: str = "") -> AsyncIterator[Model]:
        """:meth:`get`, and the version is not dropped until the block ends (reference counted)."""
        model = await self.get(version)
        entry = self._entries[model.version]
        entry.leases += 1
        try:
            yield model
        finally:
            entry.leases -= 1
            self.expire()

    def expire(self) -> None:
        """Drop retired versions whose linger is over and that no request holds."""
        now = time.monotonic()
        for version, entry in list(self._entries.items()):
            if entry.retired_at is not None and entry.leases == 0 and now - entry.retired_at >= self.linger_s:
                del self._entries[version]
                log.info("unloaded model version", extra={"version": version})

    async def watch(self, every_s: float = 2.0) -> None:
        """Follow :meth:`pointer_target` (unless a version is pinned): switch when it moves."""
        while True:
            await asyncio.sleep(every_s)
            self.expire()
            if self.pinned:
                continue
            target = self.pointer_target()
            if target and target != self.current:
                with contextlib.suppress(VersionNotAvailable):  # logged once by switch_to; retried later
                    await self.switch_to(target)
