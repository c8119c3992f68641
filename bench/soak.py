"""`python -m bench.soak`: the whole stack for minutes under steady load with new visitors every second; does memory
stay flat?

    python -m bench.soak [--duration 600] [--rate 30] [--visitors-per-s 5] [--models-dir models] [--out docs/bench/soak]

Starts the stack as `recmesh up` does (devtools.stack.LocalStack, a store and a cache redis-server) on the test
suite's tiny bundle (or the newest bundle of --models-dir) and sends an open-loop load of --rate requests/s:
every second --visitors-per-s NEW visitors each record two events (POST /v1/events) and then ask for a
recommendation by user_id; the rest are anonymous recommendations for a random 3-item session. Every
--sample-every seconds it samples the resident memory (VmRSS) of every process (gateway, each service, both
redis-servers, this load generator) and `INFO memory` of both Redis instances.

Writes <out>.json (the samples, request counts by status, and per series the slope after warm-up in MB/min, by a
least-squares line over the samples after the first --warmup-share of the run) and <out>.png (memory over time).
A process or the cache is "flat" when its slope is within --tolerance MB/min. The store is expected to grow: it
keeps every visitor's history (30-day TTL, bounded by its maxmemory); its growth is reported per new visitor.
tests/bench/test_soak.py runs it for seconds. Run it alone on the machine: other load skews what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from bench.events import HttpError, HttpPool, tiny_bundle
from devtools.stack import LocalStack
from recmesh import bundle

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid`` in bytes (None when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(eq=False)  # a Thread must stay hashable
class Sampler(threading.Thread):
    """Every ``every_s``: RSS of each named pid and `INFO memory` of each named Redis, as (seconds since start,
    {series: bytes})."""

    pids: dict[str, int]
    redis_urls: dict[str, str]
    every_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self.started_at = time.monotonic()
        self.clients = {role: redis.Redis.from_url(url, socket_timeout=5) for role, url in self.redis_urls.items()}

    def sample(self) -> None:
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self.started_at, 2)}
        for name, pid in self.pids.items():
            row[f"rss:{name}"] = rss_bytes(pid)
        for role, client in self.clients.items():
            try:
                info = client.info("memory")
                row[f"redis:{role}"] = int(info["used_memory"])
                row[f"keys:{role}"] = int(client.dbsize())
            except redis.RedisError:
                row[f"redis:{role}"] = None
        self.samples.append(row)

    def run(self) -> None:
        self.sample()
        shown = 0.0
        while not self.stopped.wait(self.every_s):
            self.sample()
            if self.samples[-1]["t_s"] - shown >= PROGRESS_EVERY_S:  # a 10-minute run shows it is alive
                shown = self.samples[-1]["t_s"]
                print(progress_line(self.samples[0], self.samples[-1]), file=sys.stderr, flush=True)
        self.sample()
        for client in self.clients.values():
            client.close()


PROGRESS_EVERY_S = 30.0
GROWS_BY_DESIGN = ("redis:store", "rss:redis-store")


def progress_line(first: dict[str, Any], last: dict[str, Any]) -> str:
    """``soak 120 s: gateway +1.2 MB, ranking-0 +3.4 MB, ... redis:store 2.1 MB``: growth since the first sample."""
    grown = [
        f"{key.split(':', 1)[1]} {((last[key] or 0) - (first.get(key) or 0)) / MB:+.1f} MB"
        for key in sorted(last)
        if key.startswith("rss:") and last[key] is not None
    ]
    store = last.get("redis:store")
    tail = f", redis store {store / MB:.1f} MB" if store else ""
    return f"soak {last['t_s']:.0f} s: RSS {', '.join(grown)}{tail}"


@dataclass
class SoakLoad:
    """Open-loop load: each second `visitors` new visitors (2 events + a recommendation by user_id each), the rest of
    `rate` anonymous recommendations."""

    http_url: str
    items: list[str]
    rate: float
    visitors: int
    statuses: Counter[str] = field(default_factory=Counter)
    new_visitors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    async def run(self, seconds: float, max_in_flight: int = 256) -> None:
        pool = HttpPool(self.http_url)
        rng = np.random.default_rng(0)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        second = 0
        while time.monotonic() - start < seconds:
            jobs = [self._visitor(pool, rng) for _ in range(self.visitors)]
            jobs += [self._anonymous(pool, rng) for _ in range(max(0, round(self.rate - 3 * self.visitors)))]
            for i, job in enumerate(jobs):  # spread over the second
                delay = start + second + i / len(jobs) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= max_in_flight:
                    job.close()
                    self.statuses["skipped"] += 1
                    continue
                task = asyncio.ensure_future(job)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            second += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        await pool.close()

    async def _post(self, pool: HttpPool, path: str, body: dict[str, Any]) -> None:
        """One call, counted as "<path> <status>" ("... degraded" for a degraded recommendation)."""
        sent = time.monotonic()
        try:
            data = await asyncio.wait_for(pool.post(path, orjson.dumps(body)), timeout=10)
            status = "200"
            if path == "/v1/recommend" and orjson.loads(data).get("degraded"):
                status = "200 degraded"
        except HttpError as e:
            status = str(e.status)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            status = "no answer"
        self.statuses[f"{path} {status}"] += 1
        self.latencies_ms.append((time.monotonic() - sent) * 1000)

    async def _visitor(self, pool: HttpPool, rng: np.random.Generator) -> None:
        self.new_visitors += 1
        user = f"soak-{os.getpid()}-{self.new_visitors}"
        now_ms = int(time.time() * 1000)
        for n, i in enumerate(rng.integers(0, len(self.items), 2)):
            event = {"user_id": user, "item_id": self.items[int(i)], "type": "view", "timestamp_ms": now_ms + n}
            await self._post(pool, "/v1/events", event)
        await self._post(pool, "/v1/recommend", {"user_id": user, "k": 10})

    async def _anonymous(self, pool: HttpPool, rng: np.random.Generator) -> None:
        session = [self.items[int(i)] for i in rng.integers(0, len(self.items), 3)]
        await self._post(pool, "/v1/recommend", {"session": session, "k": 10})


def slopes(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, float]:
    """Per series, MB per minute of a least-squares line through the samples after ``warmup_s``."""
    out: dict[str, float] = {}
    series = sorted({key for row in samples for key in row if key.startswith(("rss:", "redis:"))})
    for key in series:
        points = [(row["t_s"], row[key]) for row in samples if row["t_s"] >= warmup_s and row.get(key) is not None]
        if len(points) < 3:
            continue
        t, value = np.asarray(points, dtype=np.float64).T
        out[key] = round(float(np.polyfit(t / 60.0, value / MB, 1)[0]), 3)
    return out


def verdict(
    samples: list[dict[str, Any]], warmup_s: float, tolerance: float, visitors_per_min: float
) -> dict[str, Any]:
    """Each series' slope and whether it is flat; the store's growth per new visitor (expected: it keeps them)."""
    per_series = slopes(samples, warmup_s)
    end_s = max((row["t_s"] for row in samples), default=0.0)
    # The store keeps every new visitor's events by design (bounded by its maxmemory): its used_memory and its
    # process' RSS grow with them, and are reported as bytes per visitor, not judged flat or not.
    flat = {key: abs(slope) <= tolerance for key, slope in per_series.items() if key not in GROWS_BY_DESIGN}
    store = per_series.get("redis:store")
    return {
        "warmup_s": warmup_s,
        "tolerance_mb_per_min": tolerance,
        "slope_mb_per_min": per_series,
        "slope_last_third_mb_per_min": slopes(samples, end_s * 2 / 3),  # has growth stopped by the end?
        "flat": flat,
        "all_flat": all(flat.values()),
        "store_bytes_per_new_visitor": round(store * MB / visitors_per_min) if store and visitors_per_min else None,
    }


def plot(samples: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = np.asarray([row["t_s"] for row in samples]) / 60.0
    slope = summary["verdict"]["slope_mb_per_min"]
    for key in sorted({k for row in samples for k in row if k.startswith(("rss:", "redis:"))}):
        values = np.asarray([row.get(key) or np.nan for row in samples], dtype=np.float64) / MB
        axis = top if key.startswith("rss:") else bottom
        if axis is top:  # processes of 12 to 190 MB on one axis: their growth is what matters
            values = values - values[0]
        axis.plot(t, values, label=f"{key.split(':', 1)[1]} ({slope.get(key, float('nan')):+.2f} MB/min)")
    for axis, title in ((top, "RSS of each process: MB above its first sample"), (bottom, "Redis used_memory (MB)")):
        axis.axvline(summary["verdict"]["warmup_s"] / 60.0, color="grey", linestyle=":", label="end of warm-up")
        axis.set_title(title)
        axis.legend(fontsize=7, loc="upper left")
        axis.grid(alpha=0.3)
    bottom.set_xlabel("minutes")
    fig.suptitle(
        f"soak: {summary['rate_per_s']:g} req/s, {summary['visitors_per_s']} new visitors/s, "
        f"{summary['duration_s']:g} s; slope after warm-up in the legend"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def soak(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    items = (bundle.resolve(stack.models_dir) / "items.txt").read_text().split("\n")
    pids = {p.name: p.popen.pid for p in stack.processes}
    pids |= {f"redis-{s.role}": s.popen.pid for s in stack.redis_servers if s.popen is not None}
    pids["load_generator"] = os.getpid()
    assert stack.redis_url is not None and stack.redis_cache_url is not None
    sampler = Sampler(pids, {"store": stack.redis_url, "cache": stack.redis_cache_url}, args.sample_every)
    load = SoakLoad(stack.http_url, items, args.rate, args.visitors_per_s)
    sampler.start()
    try:
        asyncio.run(load.run(args.duration))
    finally:
        sampler.stopped.set()
        sampler.join()
    latencies = np.asarray(load.latencies_ms or [0.0])
    summary: dict[str, Any] = {
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "visitors_per_s": args.visitors_per_s,
        "new_visitors": load.new_visitors,
        "requests": dict(sorted(load.statuses.items())),
        "latency_ms": {f"p{p}": round(float(np.percentile(latencies, p)), 2) for p in (50, 99)},
        "verdict": verdict(
            sampler.samples, args.duration * args.warmup_share, args.tolerance, args.visitors_per_s * 60.0
        ),
        "samples": sampler.samples,
    }
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=None, help="newest bundle of this dir (default: a tiny one)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s in all")
    parser.add_argument("--visitors-per-s", type=int, default=20, help="new visitors each second (3 requests each)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--warmup-share", type=float, default=1 / 3, help="share of the run left out of the slope")
    parser.add_argument("--tolerance", type=float, default=0.5, help="MB/min within which a series counts as flat")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "soak"), help="<out>.json and <out>.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recmesh-soak-") as tmp:
        models = Path(args.models_dir) if args.models_dir else Path(tmp) / "models"
        if not args.models_dir:
            tiny_bundle(models)
        with LocalStack(models.resolve(), log_dir=Path(tmp) / "logs") as stack:
            summary = soak(stack, args)
    summary["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(summary["samples"], summary, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
