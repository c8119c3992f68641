"""`python -m bench.events`: how many events the gateway ingests per second, and how soon an event shows.

    python -m bench.events --duration 10 [--models-dir models] [--concurrency 16] [--batch 100]

Starts the stack as `recmesh up` does (devtools.stack.LocalStack: Redis, the three services, the gateway) on a tiny
bundle trained on synthetic sessions (or the newest bundle of --models-dir), then, each for --duration seconds:

1. ingest, closed loop with --concurrency clients: REST single events (``POST /v1/events``), REST batches of
   --batch events, gRPC RecordEvent and gRPC RecordEvents streams of --batch events. Events go to 10,000
   visitors at random (the per-visitor rate limit is not what is measured; a 429 would be counted as an error);
2. event-to-visible latency, one probe at a time: a visitor's current recommendation is fetched, its top item is
   posted as an event, and a recommendation is asked at once; the time from sending the event to receiving a
   recommendation that excludes the item is the latency (read-your-writes: one event call + one recommend call);
3. the same probe while REST single-event ingest runs with --concurrency clients.

Writes docs/bench/events.json and the "Benchmark" section of docs/events.md. The load generator (asyncio streams,
grpc.aio, one process) runs on the same machine as the stack and competes with it for the CPU; the JSON records how busy
the machine was. REST calls go through a minimal keep-alive HTTP/1.1 client (HttpPool) and every request is
built before the clock starts, so the generator costs as little CPU as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import orjson

from recmesh.v1 import common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
USERS = 10_000
BUDGET_MS = 1000  # generous: a recommendation must not degrade because the load generator hogs the CPU
pb = recommendation_service_pb2


def tiny_bundle(out: Path) -> Path:
    """The test suite's bundle: 2,000 items, 3,000 synthetic visitors (a few seconds to train)."""
    from recmesh.data.synth import generate
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    train_bundle(generate(n_items=2000, n_users=3000, seed=1), out, TrainParams(word2vec=Word2VecParams(epochs=10)))
    return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000.0
    return {f"p{p}": round(float(np.percentile(ms, p)), 2) for p in (50, 90, 99)} | {"max": round(float(ms.max()), 2)}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each process (this one as "load_generator")."""
    out = {}
    for name, pid in {**pids, "load_generator": os.getpid()}.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


class Phase:
    """Closed-loop load: ``concurrency`` workers call ``once`` until the deadline; each call stores ``size``
    events. Counts successes, errors by kind, call latencies, and the CPU each process spent per call."""

    pids: dict[str, int] = {}  # processes whose CPU is accounted: set once the stack runs

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.elapsed = 0.0
        self.cpu: dict[str, float] = {}

    async def run(self, once: Callable[[], Awaitable[None]], concurrency: int, duration: float) -> Phase:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    await once()
                except Exception as e:  # counted, not fatal: the benchmark reports errors
                    self.errors[_error_kind(e)] += 1
                    continue
                self.latencies.append(time.perf_counter() - start)

        cpu_before = cpu_seconds(self.pids)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(self.pids)
        self.cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before}
        return self

    def summary(self) -> dict[str, Any]:
        calls = len(self.latencies)
        return {
            "calls": calls,
            "events_per_call": self.size,
            "events_per_second": round(calls * self.size / self.elapsed, 1),
            "calls_per_second": round(calls / self.elapsed, 1),
            "call_latency_ms": percentiles(self.latencies),
            "errors": dict(self.errors),
            "seconds": round(self.elapsed, 2),
            "cpu_ms_per_call": {name: round(1000 * cpu / max(calls, 1), 3) for name, cpu in self.cpu.items()},
        }


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class HttpPool:
    """A minimal HTTP/1.1 keep-alive client for JSON POSTs, one connection per concurrent call. The load
    generator must cost much less CPU than what it measures: httpx spends about 1.5 ms of CPU per call, the
    gateway about 0.4 ms per event, and both share this machine's cores."""

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> bytes:
        if self.free:
            try:
                return await self._post(self.free.pop(), path, body)
            except (asyncio.IncompleteReadError, ConnectionResetError) as e:
                if isinstance(e, asyncio.IncompleteReadError) and e.partial:
                    raise
                # An idle keep-alive connection the server closed before reading the request: nothing was sent.
        return await self._post(await asyncio.open_connection(self.host, self.port), path, body)

    async def _post(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str, body: bytes) -> bytes:
        reader, writer = conn
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % (path.encode(), len(body))
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            match = re.search(rb"content-length: *(\d+)", head, re.I)
            data = await reader.readexactly(int(match.group(1))) if match else b""
        except BaseException:
            writer.close()
            raise
        self.free.append(conn)
        if status != 200:
            raise HttpError(status, data)
        return data

    async def close(self) -> None:
        for _, writer in self.free:
            writer.close()
        self.free.clear()


def _error_kind(e: Exception) -> str:
    if isinstance(e, HttpError):
        return f"HTTP {e.status}"
    if isinstance(e, grpc.aio.AioRpcError):
        return e.code().name
    return type(e).__name__


class Client:
    """Requests built before the clock starts (the generator's CPU goes to sending, not to building them)."""

    def __init__(self, http_url: str, grpc_address: str, items: list[str], batch: int) -> None:
        self.http = HttpPool(http_url)
        self.channel = grpc.aio.insecure_channel(grpc_address)
        self.stub = recommendation_service_pb2_grpc.RecommendationServiceStub(self.channel)
        self.items = items
        self.run = os.urandom(4).hex()
        events = [self.event() for _ in range(8192)]
        self.singles = itertools.cycle([orjson.dumps(e) for e in events])
        batches = [events[i : i + batch] for i in range(0, len(events) - batch + 1, batch)][:64]
        self.batches = itertools.cycle([orjson.dumps({"events": b}) for b in batches])
        self.grpc_singles = itertools.cycle([pb.RecordEventRequest(event=common_pb2.Event(**e)) for e in events])
        self.grpc_streams = itertools.cycle(
            [[pb.RecordEventRequest(event=common_pb2.Event(**e)) for e in b] for b in batches]
        )

    def event(self) -> dict[str, Any]:
        return {"user_id": f"bench-{self.run}-{random.randrange(USERS)}", "item_id": random.choice(self.items)}

    async def rest_single(self) -> None:
        await self.http.post("/v1/events", next(self.singles))

    async def rest_batch(self) -> None:
        await self.http.post("/v1/events", next(self.batches))

    async def grpc_single(self) -> None:
        await self.stub.RecordEvent(next(self.grpc_singles), timeout=10)

    async def grpc_stream(self) -> None:
        await self.stub.RecordEvents(iter(next(self.grpc_streams)), timeout=10)

    async def record(self, user: str, item: str) -> None:
        await self.http.post("/v1/events", orjson.dumps({"user_id": user, "item_id": item}))

    async def recommend(self, user: str) -> list[str]:
        body = {"user_id": user, "k": 10, "options": {"budget_ms": BUDGET_MS}}
        answer = orjson.loads(await self.http.post("/v1/recommend", orjson.dumps(body)))
        return [i["item_id"] for i in answer["items"]]

    async def close(self) -> None:
        await self.http.close()
        await self.channel.close()


async def probe(client: Client, duration: float) -> dict[str, Any]:
    """Event-to-visible latency, one probe at a time (see the module docstring)."""
    total, event_call, recommend_call = [], [], []
    visible = probes = 0
    deadline = time.perf_counter() + duration
    n = 0
    while time.perf_counter() < deadline:
        user = f"probe-{client.run}-{n}"
        n += 1
        await client.record(user, random.choice(client.items))
        before = await client.recommend(user)
        if not before:
            continue
        target = before[0]
        start = time.perf_counter()
        await client.record(user, target)
        stored = time.perf_counter()
        after = await client.recommend(user)
        done = time.perf_counter()
        probes += 1
        visible += target not in after
        total.append(done - start)
        event_call.append(stored - start)
        recommend_call.append(done - stored)
    return {
        "probes": probes,
        "visible_in_the_next_recommendation": visible,
        "event_to_visible_ms": percentiles(total),
        "event_call_ms": percentiles(event_call),
        "recommend_call_ms": percentiles(recommend_call),
    }


async def measure(stack: Any, items: list[str], duration: float, concurrency: int, batch: int) -> dict[str, Any]:
    client = Client(stack.http_url, stack.grpc_address, items, batch)
    try:
        await Phase("warm-up", 1).run(client.rest_single, concurrency, min(2.0, duration))
        ingest = {
            "rest_single": await Phase("rest_single", 1).run(client.rest_single, concurrency, duration),
            "rest_batch": await Phase("rest_batch", batch).run(client.rest_batch, concurrency, duration),
            "grpc_single": await Phase("grpc_single", 1).run(client.grpc_single, concurrency, duration),
            "grpc_stream": await Phase("grpc_stream", batch).run(client.grpc_stream, concurrency, duration),
        }
        await client.http.close()  # idle connections the server may close meanwhile
        idle = await probe(client, duration)
        load = Phase("rest_single", 1)
        loaded, _ = await asyncio.gather(
            probe(client, duration), load.run(client.rest_single, max(1, concurrency - 1), duration)
        )
        return {
            "ingest": {name: phase.summary() for name, phase in ingest.items()},
            "event_to_visible": idle,
            "event_to_visible_under_ingest_load": {**loaded, "ingest": load.summary()},
        }
    finally:
        await client.close()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def markdown(result: dict[str, Any]) -> str:
    ingest = result["ingest"]
    lines = [
        f"Measured {result['date']} on {result['machine']['cpus']} cores (1-minute load average "
        f"{result['machine']['load_average_1m']} at the start: other work shares this machine), "
        f"`python -m bench.events --duration {result['duration_s']:g}`, {result['concurrency']} concurrent "
        f"clients, batches of {result['batch']}, model {result['model']}; the load generator (one Python process) "
        "runs on the same cores. Raw numbers: [bench/events.json](bench/events.json).",
        "",
        "| ingest | events/s | calls/s | call p50 ms | call p99 ms | errors | CPU ms per call: gateway / redis / "
        "load generator |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, s in ingest.items():
        lat = s["call_latency_ms"]
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "0"
        label = name.replace("_", " ").replace("rest", "REST").replace("grpc", "gRPC")
        if s["events_per_call"] > 1:
            label += f" ({s['events_per_call']})"
        cpu = s["cpu_ms_per_call"]
        cpus = " / ".join(f"{cpu[k]:.2f}" if k in cpu else "-" for k in ("gateway", "redis", "load_generator"))
        lines.append(
            f"| {label} | {s['events_per_second']:,.0f} | {s['calls_per_second']:,.0f} | "
            f"{lat.get('p50', 0):.1f} | {lat.get('p99', 0):.1f} | {errors} | {cpus} |"
        )
    lines += [
        "",
        "| event to visible (one event call + one recommend call) | probes | visible | p50 ms | p90 ms | p99 ms "
        "| event call p50 ms | recommend call p50 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    probes = (("idle", "event_to_visible"), ("during REST single ingest", "event_to_visible_under_ingest_load"))
    for label, key in probes:
        p = result[key]
        t = p["event_to_visible_ms"]
        lines.append(
            f"| {label} | {p['probes']} | {p['visible_in_the_next_recommendation']} | {t['p50']:.1f} | "
            f"{t['p90']:.1f} | {t['p99']:.1f} | {p['event_call_ms']['p50']:.1f} | {p['recommend_call_ms']['p50']:.1f} |"
        )
    under = result["event_to_visible_under_ingest_load"]["ingest"]
    lines += ["", f"Ingest alongside the loaded probes: {under['events_per_second']:,.0f} events/s."]
    return "\n".join(lines)


def write_section(doc: Path, marker: str, body: str) -> None:
    """Replace the text between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->`` (appended if absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = doc.read_text() if doc.exists() else ""
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools.stack import LocalStack
    from recmesh import bundle

    with tempfile.TemporaryDirectory(prefix="recmesh-bench-events-") as tmp:
        models = Path(args.models_dir) if args.models_dir else tiny_bundle(Path(tmp) / "models")
        path = bundle.resolve(models)
        items = (path / "items.txt").read_text().split("\n")
        started = machine()
        with LocalStack(models.resolve(), log_dir=Path(tmp)) as stack:
            Phase.pids = {"gateway": stack.by_name("gateway")[0].popen.pid}
            if stack.redis is not None:
                Phase.pids["redis"] = stack.redis.pid
            result = asyncio.run(measure(stack, items, args.duration, args.concurrency, args.batch))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": started,
        "model": path.name,
        "items": len(items),
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "batch": args.batch,
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--models-dir", default=None, help="serve its newest bundle (default: a tiny synthetic one)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients while ingesting")
    parser.add_argument("--batch", type=int, default=100, help="events per REST batch / gRPC stream")
    parser.add_argument("--json", default=str(ROOT / "docs" / "bench" / "events.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "events.md"), help="its Benchmark section is rewritten")
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_section(Path(args.doc), "bench:events", markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
