"""`python -m bench.durability`: what durable events cost: events/s and write latency per Redis fsync policy.

    python -m bench.durability [--seconds 5] [--out docs/bench/durability.json]

For each policy (no AOF, ``appendfsync everysec``, ``appendfsync always``) a private redis-server is started with
its data directory on this machine's disk, and the gateway's event store (gateway/event_store.py: the one Lua
script RecordEvent runs) writes single events for --seconds, closed loop, with 1 and then 32 concurrent writers
(the gateway's many requests in flight: Redis fsyncs once per event-loop turn for every write of that turn, so
concurrency amortises ``always``). docs/reliability.md has the numbers and the choice. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from devtools.stack import free_port
from gateway.event_store import EventStore
from gateway.events import Event

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {
    "no AOF": ("--appendonly", "no"),
    "appendfsync everysec": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "appendfsync always": ("--appendonly", "yes", "--appendfsync", "always"),
}


async def write_for(url: str, seconds: float, writers: int) -> dict[str, Any]:
    store = EventStore.from_url(url, timeout_ms=1000, rate_limit=0)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    base_ms = int(time.time() * 1000) - 3_600_000

    async def writer(w: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            started = time.perf_counter()
            await store.record([Event(f"u{w}-{n % 1000}", f"item{n % 97}", "view", base_ms + n)])
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.monotonic() - started
    await store.close()
    return {
        "writers": writers,
        "events_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
    }


def measure(policy: str, args: tuple[str, ...], seconds: float, workdir: Path) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found")
    port = free_port()
    data = workdir / policy.replace(" ", "-")
    data.mkdir()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        return {"policy": policy, "runs": [asyncio.run(write_for(url, seconds, w)) for w in (1, 32)]}
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "durability.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recmesh-durability-", dir=os.environ.get("DURABILITY_DIR")) as tmp:
        results = [measure(name, policy, args.seconds, Path(tmp)) for name, policy in POLICIES.items()]
    report = {"seconds": args.seconds, "cpus": os.cpu_count(), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for result in results:
        for run in result["runs"]:
            print(
                f"{result['policy']:>22}  writers {run['writers']:>2}  {run['events_per_s']:>6} events/s  "
                f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
