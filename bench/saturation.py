"""`python -m bench.saturation`: closed-loop saturation of POST /v1/recommend, measured by wrk (a C client).

    python -m bench.saturation --items 100000 --connections 64 --duration 30 --json docs/bench/saturation.json

Starts the stack as `recmesh up` does (devtools/stack.py) on the serving benchmark's bundle (bench/serve.py, the
same cache), then runs `wrk -t2 -c<connections>` against the gateway: each connection sends its next request as
soon as the previous answer arrived, so what wrk reports is the stack's saturation throughput with the client's
own cost as low as it gets (wrk is C; locust is Python). The bodies are sessions of the bench bundle (2 to 5
items each, k=10), taken in turn from a Lua table. Also recorded: CPU seconds per request of every process
(/proc), the answers' degraded count (from the gateway's metrics), an idle single-connection run (`-c1`: the
latency of one request on an idle stack), and the hardware.

Needs the `wrk` binary (Debian/Ubuntu: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import write_report
from bench.serve import ROOT, bench_bundle, cpu_of, degraded_counts, hardware

WRK_HINT = "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu)"
LATENCY_LINE = re.compile(r"^\s+(50|75|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

LUA = """
bodies = {%s}
headers = {["Content-Type"] = "application/json"%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/recommend", headers, bodies[counter %% #bodies + 1])
end
"""


def lua_script(sessions: Path, n: int = 2000, seed: int = 0, api_key: str | None = None) -> str:
    """wrk's request function over `n` sessions of 2 to 5 known items (k=10), each with the API key if given."""
    rng = random.Random(seed)
    lines = [line.split()[1:] for line in sessions.read_text().splitlines()]
    bodies = []
    for _ in range(n):
        items = rng.choice(lines)
        length = min(len(items), rng.randint(2, 5))
        start = rng.randint(0, len(items) - length)
        bodies.append(json.dumps({"session": items[start : start + length], "k": 10}))
    key = f', ["Authorization"] = "Bearer {api_key}"' if api_key else ""
    return LUA % (",".join(json.dumps(b) for b in bodies), key)


def run_wrk(url: str, script: Path, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    """wrk's summary: requests/s, latency percentiles (ms), requests, non-2xx answers, socket errors."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    latency = {f"p{p}": round(float(v) * UNIT_MS[u], 3) for p, v, u in LATENCY_LINE.findall(out)}
    return {
        "command": " ".join(cmd[:-3] + ["-s", "<sessions>.lua", "<gateway>/v1/recommend"]),
        "requests_per_s": rps,
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "latency_ms": latency,
        "raw": out,
    }


def measure(stack: Any, script: Path, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run with every process's CPU and the degraded answers counted over it."""
    pids = {p.name: p.popen.pid for p in stack.processes}
    if stack.redis is not None:
        pids["redis"] = stack.redis.pid
    cpu0 = {name: cpu_of(pid) for name, pid in pids.items()}
    degraded0 = degraded_counts(stack.http_url)
    result = run_wrk(stack.http_url + "/v1/recommend", script, threads, connections, seconds)
    cpu = {name: cpu_of(pid) - cpu0[name] for name, pid in pids.items()}
    degraded1 = degraded_counts(stack.http_url)
    result["degraded"] = {k: v - degraded0.get(k, 0) for k, v in degraded1.items() if v - degraded0.get(k, 0) > 0}
    result["cpu_us_per_request"] = {name: round(1e6 * s / max(result["requests"], 1), 1) for name, s in cpu.items()}
    result["cpu_us_per_request_total"] = round(sum(result["cpu_us_per_request"].values()), 1)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools.stack import LocalStack
    from recmesh import bundle

    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    models, sessions = bench_bundle(args.items, Path(args.cache))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "sessions.lua"
        with LocalStack(models.resolve(), auth=True) as stack:  # every request pays the key check, as in production
            script.write_text(lua_script(sessions, api_key=stack.api_key))
            print(f"stack up on {bundle.resolve(models).name}; warming up ...", file=sys.stderr)
            run_wrk(stack.http_url + "/v1/recommend", script, 1, 8, 5)
            time.sleep(1)
            idle = measure(stack, script, 1, 1, args.idle_duration)
            print(f"  idle, one connection: p50 {idle['latency_ms'].get('p50')} ms", file=sys.stderr)
            loaded = measure(stack, script, args.threads, args.connections, args.duration)
            print(
                f"  -t{args.threads} -c{args.connections}: {loaded['requests_per_s']:.0f} req/s, "
                f"p50 {loaded['latency_ms'].get('p50')} ms, p99 {loaded['latency_ms'].get('p99')} ms, "
                f"non-2xx {loaded['non_2xx']}, degraded {sum(loaded['degraded'].values()):.0f}, "
                f"CPU {loaded['cpu_us_per_request_total']:.0f} µs/request",
                file=sys.stderr,
            )
    return {"items": args.items, "hardware": hardware(), "idle": idle, "saturation": loaded, "date": time.time()}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.saturation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000, help="catalogue size of the bench bundle")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (-c)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of the saturation run")
    ap.add_argument("--idle-duration", type=float, default=10, help="seconds of the one-connection run")
    ap.add_argument("--json", default="runs/bench/saturation.json", help="the report")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="bench bundles (shared with bench.serve)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
