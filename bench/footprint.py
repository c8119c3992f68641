"""`python -m bench.footprint`: memory of every process and of Redis per published version, by catalogue size.

    python -m bench.footprint --items 10000,100000 --json docs/deploy/footprint.json

For each size: the bench bundle (bench.serve's, trained once and cached), the stack started as `recmesh up`
starts it, Redis' `used_memory` before and after the bundle is published, then every process' resident memory
(VmRSS) after a short load at 100 requests/s (caches filled, lazy loads done). A straight line through the
sizes gives the per-item slope; 1M items is extrapolated from it and marked so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.report import write_report
from bench.serve import ROOT, bench_bundle, hardware, run_locust, sample_sessions

EXTRAPOLATE_TO = 1_000_000


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process (VmRSS), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(items: int, cache: Path, epochs: int, load_s: float) -> dict[str, Any]:
    import redis

    from devtools.stack import LocalStack
    from recmesh import bundle
    from recmesh.publish import publish

    models_dir, generated = bench_bundle(items, cache, epochs=epochs)
    path = bundle.resolve(models_dir)
    known = set((path / "items.txt").read_text().split("\n")) - {""}
    run_dir = cache / "runs" / f"footprint-{items}"
    run_dir.mkdir(parents=True, exist_ok=True)
    sessions = run_dir / "sessions.txt"
    sample_sessions(generated, known, sessions)
    stack = LocalStack(models_dir, log_dir=run_dir)
    stack.start_redis()
    assert stack.redis_url is not None
    client = redis.Redis.from_url(stack.redis_url)
    empty = int(client.info("memory")["used_memory"])
    publish(path, stack.redis_url, progress=False)
    published = int(client.info("memory")["used_memory"])
    with stack:  # starts the services (publishing again is a no-op for the same version)
        run_locust("rest", stack.http_url, 100, load_s, sessions, run_dir / "load.npz", None)
        rss = {p.name.removesuffix("-0"): rss_bytes(p.popen.pid) for p in stack.processes}
    files = {f.name: f.stat().st_size for f in path.rglob("*") if f.is_file()}
    print(
        f"  {len(known):,} items: redis +{(published - empty) / 2**20:.1f} MiB, "
        + ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in rss.items()),
        file=sys.stderr,
    )
    return {
        "catalogue_items": len(known),
        "bundle_bytes": sum(files.values()),
        "redis_bytes_per_version": published - empty,
        "rss_bytes": rss,
    }


def extrapolate(points: list[dict[str, Any]], items: int) -> dict[str, Any]:
    """Least-squares line through (catalogue size, bytes) for every measured quantity, evaluated at `items`."""
    import numpy as np

    x = np.array([p["catalogue_items"] for p in points], dtype=float)

    def at(values: list[float]) -> int:
        slope, intercept = np.polyfit(x, np.array(values, dtype=float), 1)
        return int(slope * items + intercept)

    names = points[0]["rss_bytes"]
    return {
        "catalogue_items": items,
        "extrapolated": True,
        "bundle_bytes": at([p["bundle_bytes"] for p in points]),
        "redis_bytes_per_version": at([p["redis_bytes_per_version"] for p in points]),
        "rss_bytes": {n: at([p["rss_bytes"][n] for p in points]) for n in names},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", default="10000,100000", help="catalogue sizes, comma-separated (at least two)")
    ap.add_argument("--json", default="runs/bench/footprint.json")
    ap.add_argument("--load-seconds", type=float, default=15, help="load before memory is read")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="bench bundles and raw records")
    ap.add_argument("--epochs", type=int, default=5, help="word2vec epochs of the bench bundles")
    args = ap.parse_args(argv)
    sizes = sorted({int(v) for v in args.items.split(",") if v.strip()})
    if len(sizes) < 2:
        ap.error("--items needs at least two sizes to extrapolate from")
    points = [measure(n, Path(args.cache), args.epochs, args.load_seconds) for n in sizes]
    report = {
        "name": "recmesh memory footprint",
        "command": "python -m bench.footprint " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured": points,
        "extrapolated": extrapolate(points, EXTRAPOLATE_TO),
        "hardware": hardware(),
    }
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
