"""CPU limits for local processes, enforced the way the kubelet enforces a container's `resources.limits.cpu`:
a CFS bandwidth quota on the process' own cgroup (`quota = cores x period` per `period`, 100 ms by default as in
Kubernetes). The local runner uses it to act out pods of a fixed size on one machine, so that adding replicas
adds capacity the way it does on a cluster instead of sharing the same two cores.

Needs write access to the cgroup filesystem (root, or a delegated subtree): cgroup v2 (`cpu.max`) or the v1 `cpu`
controller (`cpu.cfs_quota_us`). `available()` says whether this machine allows it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBERNETES_PERIOD_US = 100_000  # the kubelet's default --cpu-cfs-quota-period


def _base() -> tuple[Path, int] | None:
    """(directory to create cgroups under, cgroup version), or None when neither hierarchy is writable."""
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, 1
    v2 = CGROUP_ROOT
    controllers = v2 / "cgroup.subtree_control"
    if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(v2, os.W_OK):
        return v2, 2
    return None


def available() -> bool:
    return _base() is not None


@dataclass
class CpuLimit:
    """One cgroup holding processes that together may use at most `cores` CPUs."""

    path: Path
    version: int
    cores: float

    @classmethod
    def create(cls, name: str, cores: float, period_us: int = KUBERNETES_PERIOD_US) -> CpuLimit:
        if cores <= 0:
            raise ValueError(f"a CPU limit must be positive, got {cores}")
        base = _base()
        if base is None:
            raise PermissionError(
                f"CPU limits need a writable cgroup cpu controller under {CGROUP_ROOT} (run as root, or in a "
                "container with a delegated cgroup)"
            )
        root, version = base
        path = root / name
        path.mkdir(exist_ok=True)
        quota = max(1000, round(cores * period_us))  # the kernel's minimum quota is 1 ms
        if version == 1:
            (path / "cpu.cfs_period_us").write_text(str(period_us))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (path / "cpu.max").write_text(f"{quota} {period_us}")
        return cls(path, version, cores)

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> dict[str, int]:
        """The kernel's counters: periods run, periods throttled, time throttled (µs)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        throttled_us = int(stat.get("throttled_usec", int(stat.get("throttled_time", 0)) // 1000))
        return {
            "periods": int(stat.get("nr_periods", 0)),
            "throttled_periods": int(stat.get("nr_throttled", 0)),
            "throttled_us": throttled_us,
        }

    def remove(self) -> None:
        """Delete the cgroup (its processes must have exited); a cgroup still in use is left in place."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
