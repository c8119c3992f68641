"""`python -m bench.chaos`: the stack under steady load while its parts crash, and what callers see.

    python -m bench.chaos [--rate 0 (= 60 % of the measured capacity)] [--models-dir models] [--out docs/bench/chaos]

Starts the stack as `recmesh up` does (devtools.stack.LocalStack, supervised: a process that dies is restarted
with backoff) on the test suite's tiny bundle (or the newest bundle of --models-dir), measures its capacity
(closed loop, --concurrency callers, recommendations only) unless --rate is given, then sends an open-loop load at
--rate requests/s (80 % recommendations, half of them for a visitor with history; 20 % events, each with its own
timestamp_ms, retried after a 503 until acknowledged) while the faults happen, one after the other:

    kill -9 the Redis store, then the supervisor restarts it (same port, same append-only file);
    kill -9 each stage (embedding store, candidate generation, ranking), restarted the same way;
    SIGSTOP candidate generation for 3 s, then SIGCONT.

A thread polls /readyz every 100 ms. Afterwards every acknowledged event is looked for in Redis. Writes
<out>.json (totals, each fault's span and how long answers stayed degraded after the part was back) and <out>.png
(latency and the share of degraded answers over time, faults shaded). tests/stack/test_chaos.py runs the same at a
low rate. Run it alone on the machine: other load skews what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from bench.events import HttpError, HttpPool, tiny_bundle
from devtools.stack import LocalStack, Process, grpc_serving
from recmesh import bundle
from recmesh.redis_layout import decode_events, events_key

ROOT = Path(__file__).resolve().parents[1]
USERS = 500  # events spread over them: far below each visitor's kept history and rate limit
BUDGET_MS = 200  # the default budget: a stage that does not answer in time degrades the answer
EVENT_SHARE = 0.2
STAGES = ("embedding_store", "candidate_generation", "ranking")


@dataclass
class Sample:
    sent: float  # monotonic
    kind: str  # "recommend" | "event"
    status: int  # HTTP status; 0 = no answer
    latency_ms: float
    degraded: bool = False


@dataclass
class Fault:
    name: str
    start: float
    back: float = 0.0  # when the part answered again (PING / gRPC health SERVING / SIGCONT)


@dataclass
class ChaosLoad:
    """Open-loop load at ``rate`` requests/s on the gateway; events acknowledged are remembered to be checked."""

    http_url: str
    items: list[str]
    rate: float
    samples: list[Sample] = field(default_factory=list)
    acknowledged: list[tuple[str, str, int]] = field(default_factory=list)  # (user, item, timestamp_ms)
    event_retries: int = 0
    skipped: int = 0  # sends left out because max_in_flight requests were waiting (the gateway was stuck)
    _next_event: int = 0

    async def run(self, until: Callable[[], bool], max_in_flight: int = 256) -> None:
        pool = HttpPool(self.http_url)
        rng = np.random.default_rng(0)
        base_ms = int(time.time() * 1000) - 3_600_000  # explicit timestamps, unique per event, in the past
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        sent = 0
        while not until():
            due = start + sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            if len(tasks) >= max_in_flight:  # the gateway is stuck: do not pile up without bound
                self.skipped += 1
                continue
            if rng.random() < EVENT_SHARE:
                self._next_event += 1
                n = self._next_event
                event = (f"chaos-{n % USERS}", self.items[n % len(self.items)], base_ms + n)
                coro = self._event(pool, event)
            else:
                coro = self._recommend(pool, rng)
            task = asyncio.ensure_future(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        await pool.close()

    async def _call(self, pool: HttpPool, kind: str, path: str, body: bytes) -> tuple[Sample, bytes]:
        sent = time.monotonic()
        try:
            data = await asyncio.wait_for(pool.post(path, body), timeout=10)
            status = 200
        except HttpError as e:
            data, status = b"", e.status
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            data, status = b"", 0
        sample = Sample(sent, kind, status, (time.monotonic() - sent) * 1000)
        self.samples.append(sample)
        return sample, data

    async def _recommend(self, pool: HttpPool, rng: np.random.Generator) -> None:
        picks = rng.integers(0, len(self.items), 3)
        body: dict[str, Any] = {"session": [self.items[int(i)] for i in picks], "k": 10}
        body["options"] = {"budget_ms": BUDGET_MS}
        if rng.random() < 0.5:
            body["user_id"] = f"chaos-{int(rng.integers(0, USERS))}"
        sample, data = await self._call(pool, "recommend", "/v1/recommend", orjson.dumps(body))
        if sample.status == 200:
            sample.degraded = bool(orjson.loads(data)["degraded"])

    async def _event(self, pool: HttpPool, event: tuple[str, str, int]) -> None:
        user, item, ts = event
        body = orjson.dumps({"user_id": user, "item_id": item, "type": "view", "timestamp_ms": ts})
        for attempt in range(300):  # a caller that retries a 503 (Retry-After) until it is acknowledged
            sample, _ = await self._call(pool, "event", "/v1/events", body)
            if sample.status == 200:
                self.acknowledged.append(event)
                return
            self.event_retries += 1
            await asyncio.sleep(0.2 if attempt < 50 else 1.0)


class Poller(threading.Thread):
    """GET ``url`` every ``every_s``; keeps (time, status) of each answer (0 = no answer)."""

    def __init__(self, url: str, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.every_s = url, every_s
        self.answers: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            at = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=2) as reply:
                    status = reply.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = 0
            self.answers.append((at, status))


class Supervisor(threading.Thread):
    """What `recmesh up` does: stack.supervise() a few times a second."""

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stopped = threading.Event()
        self.lines: list[str] = []

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            self.lines += self.stack.supervise()


def _wait_for(check: Callable[[], bool], timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError("the part did not come back")


def run_faults(stack: LocalStack, settle_s: float, stop_s: float = 3.0) -> list[Fault]:
    """The faults in order, ``settle_s`` of plain load before each and after the last; each part is brought back
    by the supervisor (or SIGCONT) and its Fault says when it answered again."""
    faults: list[Fault] = []
    time.sleep(settle_s)
    store = stack.redis_server("store")
    fault = Fault("kill -9 redis store", time.monotonic())
    stack.kill(store)
    fault.back = _wait_for(lambda: store.running() and _pings(store.url))
    faults.append(fault)
    for stage in STAGES:
        time.sleep(settle_s)
        process = stack.by_name(stage)[0]
        fault = Fault(f"kill -9 {stage}", time.monotonic())
        stack.kill(process)
        fault.back = _wait_for(functools.partial(_serving, process))
        faults.append(fault)
    time.sleep(settle_s)
    process = stack.by_name("candidate_generation")[0]
    fault = Fault(f"SIGSTOP candidate_generation {stop_s:g} s", time.monotonic())
    os.kill(process.popen.pid, signal.SIGSTOP)
    time.sleep(stop_s)
    os.kill(process.popen.pid, signal.SIGCONT)
    fault.back = time.monotonic()
    faults.append(fault)
    time.sleep(settle_s)
    return faults


def _serving(process: Process) -> bool:
    return process.popen.poll() is None and grpc_serving(process.address, 0.2)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def lost_events(redis_url: str, acknowledged: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The acknowledged events that are not in Redis."""
    client = redis.Redis.from_url(redis_url)
    stored: dict[str, set[tuple[str, int]]] = {}
    for user in {u for u, _, _ in acknowledged}:
        entries = decode_events(client.lrange(events_key(user), 0, -1))  # type: ignore[arg-type]
        stored[user] = {(e["item_id"], e["timestamp_ms"]) for e in entries}
    client.close()
    return [e for e in acknowledged if (e[1], e[2]) not in stored[e[0]]]


def degraded_after_back(samples: list[Sample], faults: list[Fault], window_s: float = 0.5) -> list[float]:
    """Per fault: seconds from the part being back until answers are healthy again, i.e. the start of the first
    ``window_s`` window (sliding by 10 ms) in which under 1 % of the requests sent got a degraded answer (a rare
    degraded answer under load, a hop over its budget, is not the fault's); 0 when healthy at once."""
    tails = []
    sent = np.array([s.sent for s in samples])
    degraded = np.array([s.degraded for s in samples])
    for i, fault in enumerate(faults):
        end = faults[i + 1].start if i + 1 < len(faults) else float("inf")
        t = fault.back
        while t + window_s <= min(end, sent.max(initial=0.0)):
            mask = (sent >= t) & (sent < t + window_s)
            if mask.any() and degraded[mask].mean() < 0.01:
                break
            t += 0.01
        tails.append(round(t - fault.back, 3))
    return tails


def outside_where(samples: list[Sample], faults: list[Fault]) -> dict[str, int]:
    """Where the degraded answers outside every fault were sent, relative to the nearest fault: "before <fault>"
    (in the 0.5 s before it started) or "<x> s after <fault> was back" (rounded up to the second), counted."""
    where: dict[str, int] = {}
    for s in samples:
        nearest = min(faults, key=lambda f: min(abs(s.sent - f.start), abs(s.sent - f.back)))
        if nearest.start - 0.5 <= s.sent < nearest.start:
            key = f"sent up to 0.5 s before {nearest.name}"
        else:
            key = f"sent {math.ceil(s.sent - nearest.back)} s after {nearest.name} was back"
        where[key] = where.get(key, 0) + 1
    return where


def summarize(
    load: ChaosLoad, faults: list[Fault], readyz: list[tuple[float, int]], lost: list[Any], origin: float
) -> dict[str, Any]:
    rec = [s for s in load.samples if s.kind == "recommend"]
    events = [s for s in load.samples if s.kind == "event"]
    # A request belongs to a fault when it was in flight at any moment from the fault to 1 s after the part was
    # back: one sent just before a process died is answered degraded because of it.
    in_fault = [any(f.start <= s.sent + s.latency_ms / 1000 and s.sent <= f.back + 1.0 for f in faults) for s in rec]
    return {
        "rate_per_s": load.rate,
        "recommendations": len(rec),
        "recommendations_failed": sum(1 for s in rec if s.status != 200),
        "recommendations_degraded": sum(1 for s in rec if s.degraded),
        "degraded_outside_faults": sum(1 for s, f in zip(rec, in_fault, strict=True) if s.degraded and not f),
        "degraded_outside_where": outside_where(
            [s for s, f in zip(rec, in_fault, strict=True) if s.degraded and not f], faults
        ),
        "sends_skipped_max_in_flight": load.skipped,
        "event_calls": len(events),
        "event_calls_503": sum(1 for s in events if s.status == 503),
        "event_calls_failed_otherwise": sum(1 for s in events if s.status not in (200, 503)),
        "events_acknowledged": len(load.acknowledged),
        "events_lost": len(lost),
        "readyz_polls": len(readyz),
        "readyz_not_200": sum(1 for _, status in readyz if status != 200),
        "latency_ms": {
            "p50": round(float(np.percentile([s.latency_ms for s in rec], 50)), 2) if rec else None,
            "p99": round(float(np.percentile([s.latency_ms for s in rec], 99)), 2) if rec else None,
        },
        "faults": [
            {
                "fault": f.name,
                "at_s": round(f.start - origin, 3),
                "back_after_s": round(f.back - f.start, 3),
                "degraded_after_back_s": tail,
            }
            for f, tail in zip(faults, degraded_after_back(rec, faults), strict=True)
        ],
    }


def chaos(stack: LocalStack, rate: float, settle_s: float, stop_s: float = 3.0) -> tuple[dict[str, Any], ChaosLoad]:
    """Load at ``rate`` on a started stack while the faults happen; the summary and the raw load."""
    items = (bundle.resolve(stack.models_dir) / "items.txt").read_text().split("\n")[:500]
    load = ChaosLoad(stack.http_url, items, rate)
    supervisor, readyz = Supervisor(stack), Poller(stack.http_url + "/readyz")
    supervisor.start()
    readyz.start()
    origin = time.monotonic()
    faults: list[Fault] = []
    done = threading.Event()

    def inject() -> None:
        try:
            faults.extend(run_faults(stack, settle_s, stop_s))
        finally:
            done.set()

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    asyncio.run(load.run(done.is_set))
    injector.join()
    readyz.stopped.set()
    supervisor.stopped.set()
    readyz.join()
    supervisor.join()
    assert stack.redis_url is not None
    lost = lost_events(stack.redis_url, load.acknowledged)
    summary = summarize(load, faults, readyz.answers, lost, origin)
    summary["supervisor_log"] = supervisor.lines
    summary["_origin"] = origin
    summary["_faults"] = faults
    return summary, load


def capacity(stack: LocalStack, seconds: float, concurrency: int) -> float:
    """Recommendations/s the stack sustains closed loop with ``concurrency`` callers (no faults)."""
    items = (bundle.resolve(stack.models_dir) / "items.txt").read_text().split("\n")[:500]

    async def measure() -> int:
        pool = HttpPool(stack.http_url)
        rng = np.random.default_rng(1)
        bodies = [orjson.dumps({"session": [items[int(i)] for i in rng.integers(0, 500, 3)]}) for _ in range(512)]
        done = 0
        deadline = time.monotonic() + seconds

        async def caller(offset: int) -> None:
            nonlocal done
            n = offset
            while time.monotonic() < deadline:
                with contextlib.suppress(HttpError, OSError):
                    await pool.post("/v1/recommend", bodies[n % len(bodies)])
                    done += 1
                n += concurrency

        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        await pool.close()
        return done

    return asyncio.run(measure()) / seconds


def plot(load: ChaosLoad, summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin: float = summary["_origin"]
    rec = [s for s in load.samples if s.kind == "recommend"]
    t = np.array([s.sent - origin for s in rec])
    bins = np.arange(0, t.max() + 0.5, 0.5)
    which = np.digitize(t, bins)
    lat = np.array([s.latency_ms for s in rec])
    deg = np.array([s.degraded for s in rec])
    p50, p99, share = [], [], []
    for b in range(1, len(bins) + 1):
        mask = which == b
        p50.append(np.percentile(lat[mask], 50) if mask.any() else np.nan)
        p99.append(np.percentile(lat[mask], 99) if mask.any() else np.nan)
        share.append(deg[mask].mean() * 100 if mask.any() else np.nan)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    top.plot(bins, p50, label="p50")
    top.plot(bins, p99, label="p99")
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.legend(loc="upper right")
    bottom.plot(bins, share, color="tab:red")
    bottom.set_ylabel("degraded answers (%)")
    bottom.set_xlabel("time (s)")
    for fault in summary["_faults"]:
        for ax in (top, bottom):
            ax.axvspan(fault.start - origin, fault.back - origin, color="0.85")
        bottom.annotate(fault.name, (fault.start - origin, 102), fontsize=7, rotation=20)
    top.set_title(
        f"chaos at {summary['rate_per_s']:.0f} req/s: {summary['recommendations_failed']} failed, "
        f"{summary['events_lost']} of {summary['events_acknowledged']} acknowledged events lost, "
        f"/readyz not 200: {summary['readyz_not_200']}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def reconnect_delay(stack: LocalStack, outage_s: float, every_s: float = 0.02) -> float:
    """Kill candidate generation, start it again after ``outage_s`` (recommendations keep coming meanwhile),
    and return the seconds from it serving again to the first recommendation that is not degraded."""
    process = stack.by_name("candidate_generation")[0]
    items = (bundle.resolve(stack.models_dir) / "items.txt").read_text().split("\n")[:3]
    body = json.dumps({"session": items, "k": 10, "options": {"budget_ms": BUDGET_MS}}).encode()

    def degraded() -> bool:
        request = urllib.request.Request(stack.http_url + "/v1/recommend", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            return bool(json.loads(reply.read())["degraded"])

    stack.kill(process)
    deadline = time.monotonic() + outage_s
    while time.monotonic() < deadline:
        degraded()
        time.sleep(0.1)
    stack.restart(process)
    back = time.monotonic()
    while degraded():
        time.sleep(every_s)
    return round(time.monotonic() - back, 3)


# `--grpc-default-reconnect`: every process of the stack starts with serving.channels' reconnect options emptied
# (gRPC's own backoff: 1 s growing to 120 s), the "before" of the fast-reconnect change.
_DEFAULT_RECONNECT = "import serving.channels\nserving.channels.RECONNECT_OPTIONS.clear()\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=None, help="newest bundle of this dir (default: a tiny one)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0 = --share of the measured capacity")
    parser.add_argument("--share", type=float, default=0.6)
    parser.add_argument("--concurrency", type=int, default=32, help="callers of the capacity measurement")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds of plain load before each fault")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "chaos"), help="<out>.json and <out>.png")
    parser.add_argument(
        "--reconnect",
        default="",
        help="instead of the chaos run: outages in seconds, e.g. 5,20; prints how long answers stay degraded after "
        "candidate generation is back from each",
    )
    parser.add_argument("--grpc-default-reconnect", action="store_true", help="with --reconnect: gRPC's own backoff")
    return parser


def run_reconnect(args: argparse.Namespace, models: Path, tmp: Path) -> int:
    if args.grpc_default_reconnect:
        (tmp / "sitecustomize.py").write_text(_DEFAULT_RECONNECT)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp), str(ROOT), os.environ.get("PYTHONPATH")]))
    with LocalStack(models.resolve(), log_dir=tmp / "logs") as stack:
        delays = {f"{outage}s": reconnect_delay(stack, float(outage)) for outage in args.reconnect.split(",")}
    label = "grpc default backoff" if args.grpc_default_reconnect else "serving.channels.RECONNECT_OPTIONS"
    print(json.dumps({"reconnect": label, "degraded_after_back_s": delays}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recmesh-chaos-") as tmp:
        models = Path(args.models_dir) if args.models_dir else Path(tmp) / "models"
        if not args.models_dir:
            tiny_bundle(models)
        if args.reconnect:
            return run_reconnect(args, models, Path(tmp))
        with LocalStack(models.resolve(), log_dir=Path(tmp) / "logs") as stack:
            measured = capacity(stack, 10.0, args.concurrency) if not args.rate else None
            rate = args.rate or args.share * (measured or 0.0)
            print(f"capacity {measured} req/s; load {rate:.0f} req/s", file=sys.stderr)
            summary, load = chaos(stack, rate, args.settle)
    summary["capacity_per_s"] = round(measured, 1) if measured else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(load, summary, out.with_suffix(".png"))
    for key in ("_origin", "_faults"):
        summary.pop(key)
    summary["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "supervisor_log"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
