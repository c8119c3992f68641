"""`python -m bench.scaling`: does a stage scale out with replicas, and does the stack ride out a lost replica?

    python -m bench.scaling --items 100000 --json docs/deploy/scaling.json

One machine has two cores, so three unconstrained replicas only share the same two cores. To act out pods of a
fixed size, every replica of the scaled stage gets its own CPU limit, enforced like a kubelet enforces
`resources.limits.cpu` (a CFS quota on the process' cgroup, see devtools/cpulimit.py; with a 10 ms period, see
--period-ms), small enough that three of them still fit beside everything else. Four parts, one run, one machine:

1. cost: the stack unconstrained at a moderate rate; CPU seconds per request of every process (the sizing
   guide's input) and the per-replica limit: `--replica-rps` x the stage's CPU per request.
2. scale: for ranking and candidate-generation, 1 vs 3 limited replicas, stepping the offered load through
   multiples of the expected capacity; the knee (highest offered load served in full: no error, no degraded
   answer, p99 <= 65 ms) and each replica's share of the work.
3. unconstrained: 1 vs 3 replicas of ranking without limits, to show what replicas cost when the machine, not
   the stage, is the bottleneck.
4. failover: 3 replicas of both stages (no limits) under load below the machine's knee; SIGKILL one ranking
   replica, then one candidate replica, then start both again; errors, degraded answers and latency per
   second, with the events marked.

Writes the JSON report and PNGs (knee bars, failover timeline) next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import percentile_ms
from bench.serve import (
    ROOT,
    bench_bundle,
    degraded_counts,
    hardware,
    meets,
    run_locust,
    run_step,
    sample_sessions,
)

STAGES = ("ranking", "candidate_generation")
# Offered load as multiples of replicas x --replica-rps; a sweep stops after two failing steps in a row.
STEP_FACTORS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)


@dataclass
class Setup:
    """What every part of the run shares."""

    models_dir: Path
    sessions: Path  # sampled sessions the load is built from
    run_dir: Path  # raw records and logs
    period_us: int  # CFS period of the CPU limits

    def stack(self, name: str, replicas: dict[str, int], limits: dict[str, float]) -> Any:
        from devtools.stack import LocalStack

        logs = self.run_dir / "logs" / name
        logs.mkdir(parents=True, exist_ok=True)
        return LocalStack(
            self.models_dir, replicas=replicas, log_dir=logs, cpu_limits=limits, cpu_period_us=self.period_us
        )

    def warm(self, stack: Any, rate: float, seconds: float = 5) -> None:
        """Load a fresh stack for a few seconds first (connections, caches, lazy initialisation)."""
        run_locust("rest", stack.http_url, rate, seconds, self.sessions, self.run_dir / "warmup.npz", None)

    def load(self, stack: Any, rate: float, duration: float) -> dict[str, Any]:
        """One open-loop step of bench.serve's request mix against `stack`."""
        step, _ = run_step(stack, "rest", rate, duration, self.sessions, self.run_dir, None)
        return step


def slim(step: dict[str, Any]) -> dict[str, Any]:
    """The figures of a step this report keeps (the full ghz summaries are in bench.serve's reports)."""
    return {
        "offered_rps": step["offered_rps"],
        "rps": round(step["rps"], 1),
        "p50_ms": percentile_ms(step, 50),
        "p99_ms": percentile_ms(step, 99),
        "errors": sum(step["errorDistribution"].values()),
        "error_kinds": step["errorDistribution"],
        "degraded": sum(step["degraded"].values()),
        "degraded_by_reason": step["degraded"],
        "meets": meets(step, p50_ms=math.inf),
        "cpu_seconds_per_request": step["cpu_seconds_per_request"],
        "cpu_cores_busy": step["cpu_cores_busy"],
        "machine": step["machine"],
    }


def measure_cost(setup: Setup, rate: float, duration: float) -> dict[str, Any]:
    print(f"[cost] 1 replica each, no limits, {rate:g}/s for {duration:g}s", file=sys.stderr)
    with setup.stack("cost", {}, {}) as stack:
        setup.warm(stack, rate)
        return slim(setup.load(stack, rate, duration))


def sweep(
    setup: Setup, stage: str, replicas: int, limit: float | None, rates: list[float], duration: float
) -> dict[str, Any]:
    limits = {stage: limit} if limit else {}
    name = f"{stage}-x{replicas}-{'limited' if limit else 'unlimited'}"
    print(f"[scale] {name}: {limit or 'no'} cores per replica, offered {rates}", file=sys.stderr)
    steps = []
    with setup.stack(name, {stage: replicas}, limits) as stack:
        setup.warm(stack, rates[0])
        for rate in rates:
            before = {p.name: p.cpu_limit.throttled() for p in stack.processes if p.cpu_limit}
            step = setup.load(stack, rate, duration)
            entry = slim(step)
            after = {p.name: p.cpu_limit.throttled() for p in stack.processes if p.cpu_limit}
            entry["throttled_share"] = {
                n: round(
                    (after[n]["throttled_periods"] - before[n]["throttled_periods"])
                    / max(1, after[n]["periods"] - before[n]["periods"]),
                    3,
                )
                for n in after
            }
            steps.append(entry)
            if len(steps) >= 2 and not steps[-1]["meets"] and not steps[-2]["meets"]:
                break  # past the knee: higher steps only queue
    replica_cpu = [{n: v for n, v in s["cpu_cores_busy"].items() if n.startswith(stage)} for s in steps]
    full = [s["rps"] * (1 - s["degraded"] / max(1.0, s["rps"] * duration)) for s in steps]
    return {
        "stage": stage,
        "replicas": replicas,
        "cpu_limit_per_replica": limit,
        "knee_rps": max((s["offered_rps"] for s in steps if s["meets"]), default=None),
        "max_full_pipeline_rps": round(max(full), 1),
        "replica_cores_busy": replica_cpu,
        "steps": steps,
    }


class DegradedSampler(threading.Thread):
    """Once a second, the gateway's degraded-answer counters (a 200 that skipped a hop is not an error, but
    not the full pipeline either)."""

    def __init__(self, http_url: str) -> None:
        super().__init__(daemon=True)
        self.http_url = http_url
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), sum(degraded_counts(self.http_url).values())))
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def failover(setup: Setup, rate: float, duration: float) -> dict[str, Any]:
    """3 replicas of both stages, no CPU limits, at `rate`: SIGKILL ranking-1 at 20% of the run,
    candidate_generation-1 at 40%, start both again at 60%."""
    from bench.report import Records, over_time

    print(f"[failover] 3 replicas of ranking and candidate-generation, {rate:g}/s for {duration:g}s", file=sys.stderr)
    events: list[tuple[float, str]] = []
    with setup.stack("failover", dict.fromkeys(STAGES, 3), {}) as stack:
        setup.warm(stack, rate)
        ranking, candidates = stack.by_name("ranking-1")[0], stack.by_name("candidate_generation-1")[0]

        def script() -> None:
            t0 = time.monotonic()
            for at, what, act in (
                (0.2, "kill ranking-1", lambda: stack.kill(ranking)),
                (0.4, "kill candidate_generation-1", lambda: stack.kill(candidates)),
                (0.6, "restart both", lambda: stack.restart(ranking, candidates)),
            ):
                time.sleep(max(0.0, t0 + at * duration - time.monotonic()))
                events.append((time.monotonic(), what))
                act()
                print(f"  {what}", file=sys.stderr)
            events.append((time.monotonic(), "both serving again"))

        actor = threading.Thread(target=script, daemon=True)
        degraded = DegradedSampler(stack.http_url)
        degraded.start()
        actor.start()
        step, _ = run_step(stack, "rest", rate, duration, setup.sessions, setup.run_dir, None)
        actor.join()
        degraded.stop()
        records = Records.load(setup.run_dir / f"step-{rate:g}.npz")
    origin = float(records.start.min())
    series = over_time(records)
    series["degraded_t"] = [round(t - origin, 2) for t, _ in degraded.samples[1:]]
    series["degraded"] = [b - a for (_, a), (_, b) in zip(degraded.samples, degraded.samples[1:], strict=False)]
    marks = [{"t": round(t - origin, 2), "event": what} for t, what in events]
    phases = phase_stats(records, origin, [t - origin for t, _ in events])
    return {
        "rate": rate,
        "duration_s": duration,
        "requests": len(records),
        "errors": int((~records.ok).sum()),
        "error_kinds": {str(k): int(v) for k, v in zip(*_unique(records.error[~records.ok]), strict=True)},
        "degraded": sum(step["degraded"].values()),
        "degraded_by_reason": step["degraded"],
        "phases": phases,
        "events": marks,
        "series": series,
    }


def phase_stats(records: Any, origin: float, times: list[float]) -> dict[str, dict[str, Any]]:
    """Requests, errors and latency between the failover's events (seconds since `origin`: kill, kill, restart
    begins, both serving again)."""
    names = ("3+3 replicas", "ranking 2 of 3", "ranking 2, candidates 2 of 3", "restarting", "restarted")
    bounds = [0.0, *times, math.inf] if len(times) == 4 else [0.0, math.inf]
    t = records.start - origin
    out = {}
    for name, lo, hi in zip(names, bounds, bounds[1:], strict=False):
        mask = (t >= lo) & (t < hi)
        lat = records.latency_ms[mask & records.ok]
        out[name] = {
            "from_s": round(lo, 2),
            "requests": int(mask.sum()),
            "errors": int((mask & ~records.ok).sum()),
            "p50_ms": round(_percentile(lat, 50), 2),
            "p99_ms": round(_percentile(lat, 99), 2),
        }
    return out


def _percentile(values: Any, p: float) -> float:
    import numpy as np

    return float(np.percentile(values, p)) if len(values) else math.nan


def _unique(values: Any) -> tuple[list[str], list[int]]:
    import numpy as np

    keys, counts = np.unique(values, return_counts=True)
    return list(keys), list(counts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from recmesh import bundle, cpulimit

    if not cpulimit.available():
        raise SystemExit("bench.scaling needs a writable cgroup cpu controller (run as root); see devtools/cpulimit.py")
    models_dir, generated = bench_bundle(args.items, Path(args.cache), epochs=args.epochs)
    run_dir = Path(args.cache) / "runs" / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-scaling"
    run_dir.mkdir(parents=True, exist_ok=True)
    sessions = run_dir / "sessions.txt"
    known = set((bundle.resolve(models_dir) / "items.txt").read_text().split("\n"))
    sample_sessions(generated, known, sessions)
    setup = Setup(models_dir, sessions, run_dir, round(args.period_ms * 1000))

    cost = measure_cost(setup, args.cost_rate, args.duration)
    per_request = cost["cpu_seconds_per_request"]
    limits = {  # cores per replica so that one replica saturates near --replica-rps
        stage: round(math.ceil(per_request[f"{stage}-0"] * args.replica_rps * 100) / 100, 2) for stage in STAGES
    }
    print(f"  CPU per request: {per_request}; limits per replica: {limits}", file=sys.stderr)

    scale = []
    for stage in STAGES:
        for replicas in (1, 3):
            rates = [round(f * replicas * args.replica_rps) for f in STEP_FACTORS]
            scale.append(sweep(setup, stage, replicas, limits[stage], rates, args.duration))
    unconstrained = [sweep(setup, "ranking", n, None, args.unconstrained_steps, args.duration) for n in (1, 3)]
    fail = failover(setup, args.failover_rate, args.failover_duration)

    report = {
        "name": "recmesh replica scaling",
        "sizing": sizing(unconstrained[0], cost),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.scaling " + " ".join(sys.argv[1:]),
        "catalogue_items": len(known) - ("" in known),
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "cost": cost,
        "cpu_limit_per_replica": limits,
        "scale": scale,
        "unconstrained": unconstrained,
        "failover": fail,
        "hardware": hardware(),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    from bench.scaling_plot import plot_failover, plot_scaling

    plot_scaling(report, out.with_name(out.stem + "-knee.png"))
    plot_failover(report, out.with_name(out.stem + "-failover.png"))
    print(f"wrote {out} and its PNGs", file=sys.stderr)
    return report


def sizing(one_replica: dict[str, Any], cost: dict[str, Any]) -> dict[str, Any]:
    """Pods per service for 1k/10k/100k QPS (bench/sizing.py) from the CPU per request of the unconstrained
    single-replica stack at its knee, the busiest load it served in full (else the cost run)."""
    from bench.sizing import replicas_for

    served = [s for s in one_replica["steps"] if s["meets"]]
    basis = max(served, key=lambda s: s["offered_rps"]) if served else cost
    return {"basis_offered_rps": basis["offered_rps"], **replicas_for(basis["cpu_seconds_per_request"])}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000, help="catalogue size of the bench bundle")
    ap.add_argument("--json", default="runs/bench/scaling.json", help="the report; PNGs are written next to it")
    ap.add_argument("--duration", type=float, default=20, help="seconds per load step")
    ap.add_argument(
        "--replica-rps",
        type=float,
        default=100,
        help="the capacity one limited replica is sized for (its CPU limit follows from the cost run)",
    )
    ap.add_argument("--cost-rate", type=float, default=200, help="offered load of the cost run")
    ap.add_argument(
        "--unconstrained-steps",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[300, 400, 500, 600],
        help="offered loads of the unconstrained 1 vs 3 ranking sweep",
    )
    ap.add_argument(
        "--failover-rate",
        type=float,
        default=300,
        help="offered load of the kill/restart run (no CPU limits; below this machine's knee)",
    )
    ap.add_argument("--failover-duration", type=float, default=60, help="seconds of the kill/restart run")
    ap.add_argument(
        "--period-ms",
        type=float,
        default=10,
        help="CFS period of the limits. A scaled-down replica (a tenth of a core) under the kubelet's 100 ms would "
        "run ~10 ms and then freeze ~90 ms, a pause a full-size pod at the same utilisation never sees; 10 ms "
        "keeps the pauses at the scale of one request",
    )
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="bench bundles and raw records")
    ap.add_argument("--epochs", type=int, default=5, help="word2vec epochs of the bench bundle")
    return ap


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
