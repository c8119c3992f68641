"""Locust scenarios for the gateway: `RestUser` (REST/JSON, FastHttpUser) and `GrpcUser` (RecommendationService).

Both send the same realistic mix, built from real sessions (a `user item1 item2 ...` file the bundle was trained
on): mostly recommendations for a session prefix, some for a visitor with recorded events, events, similar items
and rank-only calls. Arrivals are open loop: one schedule for the whole process (request n leaves at
t0 + n / RATE), so a slow answer never delays the next request as long as an idle user is left; how late requests
left is recorded (`intended` vs `start`). `python -m bench.serve` runs this headless; by hand:

    RECMESH_BENCH_SESSIONS=sessions.txt RECMESH_BENCH_RATE=800 \
        locust -f bench/locustfile.py --headless -u 80 -r 80 -t 30s --host http://127.0.0.1:8080 RestUser

Environment: RECMESH_BENCH_SESSIONS (default: beauty.txt, docs/data.md), RECMESH_BENCH_RATE (requests/s for the
whole process; 0 = closed loop, no wait), RECMESH_BENCH_RECORD (write every request's timings there, .npz, for
bench.report), RECMESH_BENCH_SEED, RECMESH_API_KEY (sent with every request, REST and gRPC, when set).
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel: gRPC's I/O on gevent's loop, so blocking calls yield

import gevent  # noqa: E402
import numpy as np  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from locust import FastHttpUser, User, events, task  # noqa: E402

from bench.report import STAGES, Records  # noqa: E402
from recmesh.v1 import common_pb2  # noqa: E402
from recmesh.v1 import recommendation_service_pb2 as pb  # noqa: E402
from recmesh.v1 import recommendation_service_pb2_grpc as pb_grpc  # noqa: E402

API_KEY = os.environ.get("RECMESH_API_KEY", "")
GRPC_METADATA = (("authorization", f"Bearer {API_KEY}"),) if API_KEY else None
DEFAULT_SESSIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "beauty.txt"
SESSIONS = Path(os.environ.get("RECMESH_BENCH_SESSIONS", str(DEFAULT_SESSIONS)))
RATE = float(os.environ.get("RECMESH_BENCH_RATE", "0"))
RECORD = os.environ.get("RECMESH_BENCH_RECORD", "")
# Options every recommendation carries (bench.serve --catalog-compare: a filter and a diversity cap), as JSON
OPTIONS: dict[str, Any] = json.loads(os.environ.get("RECMESH_BENCH_OPTIONS") or "{}")
MAX_SESSION_ITEMS = 20  # a request carries at most the last 20 items of the sampled prefix
VISITORS = 1000  # visitors whose events are recorded and read back
RANK_CANDIDATES = 50
K = 10

rng = random.Random(int(os.environ.get("RECMESH_BENCH_SEED", "0")))


def read_sessions(path: Path) -> list[list[str]]:
    """`user item1 item2 ...` lines, sessions of at least 2 items."""
    sessions = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                sessions.append(parts[1:])
    if not sessions:
        raise SystemExit(f"no sessions of 2+ items in {path}")
    return sessions


SAMPLE = read_sessions(SESSIONS)
CATALOGUE = sorted({item for s in SAMPLE for item in s})


class Workload:
    """What the next request asks for: sampled sessions, visitors, candidate lists."""

    @staticmethod
    def session() -> list[str]:
        s = rng.choice(SAMPLE)
        cut = rng.randint(1, len(s) - 1)  # a prefix: what the visitor has seen so far
        return s[max(0, cut - MAX_SESSION_ITEMS) : cut]

    @staticmethod
    def visitor() -> str:
        return f"bench-u{rng.randrange(VISITORS)}"

    @staticmethod
    def item() -> str:
        return rng.choice(rng.choice(SAMPLE))

    @staticmethod
    def candidates() -> list[str]:
        return rng.sample(CATALOGUE, min(RANK_CANDIDATES, len(CATALOGUE)))


# ------------------------------------------------------------------------------------------------ open loop
class Arrivals:
    """One arrival schedule for the process: request n is due at t0 + n / rate (monotonic seconds)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.t0: float | None = None
        self.n = 0

    def claim(self) -> tuple[float, float]:
        """(when the next request is due, how long to sleep until then)."""
        now = time.monotonic()
        if self.rate <= 0:
            return now, 0.0
        if self.t0 is None:
            self.t0 = now
        due = self.t0 + self.n / self.rate
        self.n += 1
        return due, max(0.0, due - now)


ARRIVALS = Arrivals(RATE)


class OpenLoop:
    """Mixin: every task waits for its own slot in the shared schedule, not for the previous answer."""

    intended = 0.0

    def on_start(self) -> None:
        self.intended, delay = ARRIVALS.claim()
        gevent.sleep(delay)

    def wait_time(self) -> float:
        self.intended, delay = ARRIVALS.claim()
        return delay


# ------------------------------------------------------------------------------------------------ recording
class Recorder:
    """Every request's kind, send time, intended time, latency, status and Server-Timing stages."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float, str, str, str]] = []
        self.cpu_start = 0.0
        self.cpu_s = float("nan")

    def add(
        self, name: str, start: float, intended: float, latency_ms: float, status: str, error: str, timing: str
    ) -> None:
        self.rows.append((name, start, intended, latency_ms, status, error, timing))

    def records(self) -> Records:
        rows = self.rows
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        for row in rows:
            parsed = parse_server_timing(row[6])
            for s in STAGES:
                stages[s].append(parsed.get(s, float("nan")))
        return Records(
            name=np.array([r[0] for r in rows], dtype=str),
            start=np.array([r[1] for r in rows], dtype=np.float64),
            intended=np.array([r[2] for r in rows], dtype=np.float64),
            latency_ms=np.array([r[3] for r in rows], dtype=np.float64),
            status=np.array([r[4] for r in rows], dtype=str),
            error=np.array([r[5] for r in rows], dtype=str),
            stages={s: np.array(v, dtype=np.float64) for s, v in stages.items()},
            cpu_s=self.cpu_s,
        )


def parse_server_timing(value: str) -> dict[str, float]:
    """`embeddings;dur=1.20, total;dur=3.90` -> {"embeddings": 1.2, "total": 3.9}."""
    out = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


RECORDER = Recorder()


@events.test_start.add_listener
def _test_start(**_: Any) -> None:
    RECORDER.cpu_start = cpu_seconds()


@events.test_stop.add_listener
def _test_stop(**_: Any) -> None:
    RECORDER.cpu_s = cpu_seconds() - RECORDER.cpu_start
    if RECORD:
        RECORDER.records().save(RECORD)


@events.request.add_listener
def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    context = context or {}
    if "intended" not in context:
        return  # not one of ours
    if request_type == "grpc":
        status, timing = context["status"], context.get("timing", "")
    else:
        status = str(getattr(response, "status_code", 0) or 0)
        headers = getattr(response, "headers", None)
        timing = (headers.get("server-timing") or "") if headers else ""
    if exception is None:
        error = ""
    elif request_type != "grpc" and status != "0":
        error = f"{name}: HTTP {status}"  # one key per kind and status (the URL would make one per item id)
    else:
        error = f"{name}: {type(exception).__name__}: {exception}"[:200]
    end = time.monotonic()
    RECORDER.add(name, end - response_time / 1000, context["intended"], response_time, status, error, timing)


def _options() -> dict[str, Any]:
    return {"options": OPTIONS} if OPTIONS else {}


# ------------------------------------------------------------------------------------------------ REST
class RestUser(OpenLoop, FastHttpUser):
    """The REST/JSON API. Weights: 70 session recommendations, 10 visitor recommendations, 10 events,
    6 similar items, 4 rank-only calls."""

    wait_time = OpenLoop.wait_time  # type: ignore[assignment]
    default_headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else None

    def _post(self, path: str, name: str, body: dict[str, Any]) -> None:
        self.client.post(path, json=body, name=name, context={"intended": self.intended})

    @task(70)
    def recommend(self) -> None:
        self._post("/v1/recommend", "recommend", {"session": Workload.session(), "k": K, **_options()})

    @task(10)
    def recommend_user(self) -> None:
        body = {"user_id": Workload.visitor(), "session": Workload.session()[-2:], "k": K, **_options()}
        self._post("/v1/recommend", "recommend_user", body)

    @task(10)
    def event(self) -> None:
        self._post("/v1/events", "event", {"user_id": Workload.visitor(), "item_id": Workload.item(), "type": "view"})

    @task(6)
    def similar(self) -> None:
        self.client.get(
            f"/v1/items/{Workload.item()}/similar?k={K}", name="similar", context={"intended": self.intended}
        )

    @task(4)
    def rank(self) -> None:
        self._post("/v1/rank", "rank", {"session": Workload.session(), "candidates": Workload.candidates(), "k": K})


# ------------------------------------------------------------------------------------------------ gRPC
_channel: grpc.Channel | None = None
GRPC_OPTIONS = json_format.ParseDict(OPTIONS, pb.RecommendOptions())


def _stub(host: str) -> pb_grpc.RecommendationServiceStub:
    """One channel for the process (HTTP/2 multiplexes every user's calls), as a real client would hold."""
    global _channel
    if _channel is None:
        _channel = grpc.insecure_channel(host.removeprefix("http://").removeprefix("grpc://"))
    return pb_grpc.RecommendationServiceStub(_channel)


class GrpcUser(OpenLoop, User):
    """recmesh.v1.RecommendationService, the same mix as RestUser. Reports to locust's request event."""

    wait_time = OpenLoop.wait_time  # type: ignore[assignment]
    timeout_s = 5.0

    def on_start(self) -> None:
        self.stub = _stub(self.host or "127.0.0.1:50050")
        super().on_start()

    def _call(self, name: str, method: Any, request: Any) -> None:
        context: dict[str, Any] = {"intended": self.intended}
        start_time = time.time()
        start = time.perf_counter()
        exception: BaseException | None = None
        length = 0
        try:
            reply, call = method.with_call(request, timeout=self.timeout_s, metadata=GRPC_METADATA)
            context["status"] = "OK"
            length = reply.ByteSize()
            trailing = call.trailing_metadata() or ()
        except grpc.RpcError as e:
            exception = e
            context["status"] = e.code().name if hasattr(e, "code") else "UNKNOWN"
            trailing = ()
        elapsed_ms = (time.perf_counter() - start) * 1000
        context["timing"] = next((v for k, v in trailing if k == "server-timing"), "")
        events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            response=None,
            context=context,
            exception=exception,
            start_time=start_time,
            url=None,
        )

    @task(70)
    def recommend(self) -> None:
        request = pb.RecommendRequest(session_item_ids=Workload.session(), k=K, options=GRPC_OPTIONS)
        self._call("recommend", self.stub.Recommend, request)

    @task(10)
    def recommend_user(self) -> None:
        request = pb.RecommendRequest(
            user_id=Workload.visitor(), session_item_ids=Workload.session()[-2:], k=K, options=GRPC_OPTIONS
        )
        self._call("recommend_user", self.stub.Recommend, request)

    @task(10)
    def event(self) -> None:
        event = common_pb2.Event(user_id=Workload.visitor(), item_id=Workload.item(), type=common_pb2.EVENT_TYPE_VIEW)
        self._call("event", self.stub.RecordEvent, pb.RecordEventRequest(event=event))

    @task(6)
    def similar(self) -> None:
        self._call("similar", self.stub.GetSimilarItems, pb.GetSimilarItemsRequest(item_id=Workload.item(), k=K))

    @task(4)
    def rank(self) -> None:
        candidates = [common_pb2.ItemScore(item_id=i) for i in Workload.candidates()]
        request = pb.RankCandidatesRequest(session_item_ids=Workload.session(), candidates=candidates, k=K)
        self._call("rank", self.stub.RankCandidates, request)
