"""`python -m bench.serve`: the serving benchmark — the whole stack under an open-loop load, on this machine.

    python -m bench.serve --items 100000 --rate 1200 --duration 60 --json docs/bench/rest.json \
        --steps 400,800,1200,1600 [--protocol rest|grpc]

1. Builds (or reuses, cached under --cache) a bundle trained on synthetic sessions with a catalogue of at least
   --items items, or takes --models-dir; samples sessions whose items the bundle knows (--sessions, default the
   synthetic sessions the bench bundle was trained on, or beauty.txt with --models-dir: docs/data.md).
2. Measures the floor in this process: `Model.recommend` called as a function (no network, no serialization).
3. Starts the stack as `recmesh up` does (LocalStack: Redis, the three services, the gateway), warms it up, then
   runs locust headless (bench/locustfile.py, one subprocess per step) at each offered rate for --duration s.
4. Writes, per run: a ghz-compatible JSON summary (plus offered_rps, per_stage_ms from Server-Timing,
   cpu_seconds_per_request of every process from /proc/<pid>/stat, floor_us_per_request, the knee), locust's
   CSVs, and a PNG of latency percentiles over time and over offered load.

The load generator runs on the same machine and its CPU is counted too. Nothing is tuned per run: the numbers
are what the run measured, on a machine other people may be using (the JSON records how busy it was).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import (
    Records,
    by_kind,
    ghz_summary,
    over_time,
    percentile_ms,
    plot,
    schedule_lag,
    stage_percentiles,
    window_stats,
)

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
BEAUTY = ROOT.parent / "shared" / "data" / "beauty.txt"
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER_CLASS = {"rest": "RestUser", "grpc": "GrpcUser"}
P99_GOAL_MS, P50_GOAL_MS = 65.0, 10.0


# ------------------------------------------------------------------------------------------------ bundle
def bench_bundle(items: int, cache: Path, epochs: int = 5, seed: int = 0) -> tuple[Path, Path]:
    """(models dir, sessions file) of a bundle whose catalogue has at least `items` items, trained once on
    synthetic sessions (4 visitors per item) and cached. The generator's popularity tail leaves some items
    unseen, so the generated catalogue is grown until the trained one is large enough."""
    from recmesh import bundle
    from recmesh.data.synth import generate, write_user_lines
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    home = cache / f"synth-{items}-e{epochs}-s{seed}"
    models, sessions = home / "models", home / "sessions.txt"
    if bundle.list_versions(models) and sessions.exists():
        return models, sessions
    n_items, n_users = items, 4 * items
    while True:
        dataset = generate(n_items=n_items, n_users=n_users, seed=seed)
        seen = len(dataset.items())
        print(f"synthetic: {n_items:,} generated items -> {seen:,} seen in {n_users:,} sessions", file=sys.stderr)
        if seen >= items:
            break
        n_items = math.ceil(n_items * items / seen * 1.01)
    shutil.rmtree(home, ignore_errors=True)
    models.mkdir(parents=True)
    params = TrainParams(word2vec=Word2VecParams(epochs=epochs))
    print(f"training the bench bundle ({epochs} word2vec epochs) ...", file=sys.stderr)
    train_bundle(dataset, models, params, progress=False)
    write_user_lines(dataset, sessions)
    return models, sessions


def sample_sessions(source: Path, known: set[str], out: Path, n: int = 20_000, seed: int = 0) -> int:
    """Write up to `n` sessions of `source` (user-lines format) restricted to the items the bundle knows (2+ of
    them) to `out`; returns how many. Fails when the bundle does not know most of the source's items."""
    sessions, total, kept = [], 0, 0
    with open(source) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = parts[1:]
            total += len(items)
            ok = [i for i in items if i in known]
            kept += len(ok)
            if len(ok) >= 2:
                sessions.append((parts[0], ok))
    if total == 0 or kept / total < 0.5:
        raise SystemExit(
            f"the bundle knows {kept:,} of the {total:,} items in {source}: sample sessions from the "
            "data it was trained on (--sessions)"
        )
    random.Random(seed).shuffle(sessions)
    out.write_text("".join(f"{user} {' '.join(items)}\n" for user, items in sessions[:n]))
    return min(n, len(sessions))


def shown(path: Path) -> str:
    """A path as a report states it: relative to the repository when inside it (reports are committed under docs/,
    and a machine's own paths mean nothing elsewhere), else its name."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def measure_floor(bundle_path: Path, sessions: Path, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The in-process pipeline per request (µs), the functions the services wrap, on the same session prefixes the
    load uses, one thread, no network: ``p50_us`` with the bundle's default recipe (what the stack serves when a
    request names none, as the load's requests do), and, in the same run, ``ann_only_p50_us``: query + ScaNN
    top-N + ranking of N, the pipeline before candidate sources (N = the bundle's candidate count)."""
    from recmesh.pipeline import load_model

    model = load_model(bundle_path)
    n_candidates = int(model.manifest["params"].get("candidates", 200))
    lines = [line.split()[1:] for line in sessions.read_text().splitlines()]
    rng = random.Random(seed)
    histories = []
    for _ in range(n):
        s = rng.choice(lines)
        cut = rng.randint(1, len(s) - 1)
        histories.append(model.recent_known(s[max(0, cut - 20) : cut])[0])
    served = {"recipe": model.default_recipe}
    ann_only = {"n_candidates": n_candidates}
    for h in histories[:200]:  # warm caches and lazy initialisation
        model.recommend(h, 10, **served)
        model.recommend(h, 10, **ann_only)
    times = {"served": np.empty(n), "ann_only": np.empty(n)}
    for i, h in enumerate(histories):  # interleaved, so machine noise falls on both alike
        for name, kwargs in (("served", served), ("ann_only", ann_only)):
            t0 = time.perf_counter_ns()
            model.recommend(h, 10, **kwargs)
            times[name][i] = (time.perf_counter_ns() - t0) / 1000
    t = times["served"]
    return {
        "p50_us": round(float(np.median(t)), 1),
        "mean_us": round(float(t.mean()), 1),
        "p99_us": round(float(np.percentile(t, 99)), 1),
        "recipe": str(model.manifest.get("sources", {}).get("default_recipe") or f"ann:{n_candidates}"),
        "ann_only_p50_us": round(float(np.median(times["ann_only"])), 1),
        "served_over_ann_only": round(float(np.median(t) / np.median(times["ann_only"])), 2),
        "requests": n,
        "n_candidates": n_candidates,
        "catalogue_items": model.n_items,
        "model_version": model.version,
    }


# ------------------------------------------------------------------------------------------------ CPU
def cpu_of(pid: int) -> float:
    """utime + stime of a live process, seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5), after pid and comm


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


def hardware() -> dict[str, Any]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("grpcio", "protobuf", "fastapi", "uvicorn", "uvloop", "locust", "scann", "numpy", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": info.get("Model name", platform.processor()).strip(),
        "cpus": os.cpu_count(),
        "hypervisor": info.get("Hypervisor vendor", "").strip() or None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def degraded_counts(http_url: str) -> dict[str, float]:
    """The gateway's `recmesh_degradations_total` counters by reason (answers served degraded: a hop skipped)."""
    import urllib.request

    try:
        with urllib.request.urlopen(http_url + "/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("recmesh_degradations_total{") and 'component="gateway"' in line:
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0.0) + float(value)
    return counts


class Sampler(threading.Thread):
    """Once a second: how many cores the machine used, and how many of them were ours (the stack and locust),
    so each second's latency can be read against what the rest of the machine was doing."""

    def __init__(self, pids: dict[str, int], every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.samples: list[tuple[float, float, float]] = []  # (monotonic s, machine busy s, ours s)
        self._stop_event = threading.Event()
        self._last: dict[str, float] = {}

    def sample(self) -> None:
        for name, pid in list(self.pids.items()):  # a process that exited keeps its last reading
            self._last[name] = max(self._last.get(name, 0.0), cpu_of(pid))
        self.samples.append((time.monotonic(), machine_busy()[0], sum(self._last.values())))

    def run(self) -> None:
        self.sample()
        while not self._stop_event.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def series(self, origin: float) -> dict[str, list[float]]:
        """Per interval: seconds since `origin` (interval start), cores busy outside our processes, ours."""
        out: dict[str, list[float]] = {"t": [], "other_cores": [], "our_cores": []}
        for (t0, m0, o0), (t1, m1, o1) in itertools.pairwise(self.samples):
            dt = t1 - t0
            if dt <= 0:
                continue
            out["t"].append(round(t0 - origin, 3))
            out["other_cores"].append(round(max(0.0, (m1 - m0) - (o1 - o0)) / dt, 3))
            out["our_cores"].append(round((o1 - o0) / dt, 3))
        return out


# ------------------------------------------------------------------------------------------------ locust
def run_locust(
    protocol: str,
    host: str,
    rate: float,
    duration: float,
    sessions: Path,
    record: Path,
    csv_prefix: Path | None,
    users: int | None = None,
    pids: dict[str, int] | None = None,
    api_key: str | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[int, float]:
    """Run locust headless at `rate` for `duration` s; returns (users, the process' CPU seconds, all of it).
    Its pid is added to `pids` (as "locust") while it runs. Every request carries ``api_key`` when given."""
    users = users or max(16, math.ceil(rate * 0.1))  # idle users absorb latency up to users / rate seconds
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{duration:g}s",
        "--host",
        host,
        "--only-summary",
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    if csv_prefix is not None:
        cmd += ["--csv", str(csv_prefix), "--csv-full-history"]
    cmd.append(USER_CLASS[protocol])
    env = {
        **os.environ,
        "RECMESH_BENCH_SESSIONS": str(sessions),
        "RECMESH_BENCH_RATE": str(rate),
        "RECMESH_BENCH_RECORD": str(record),
        "PYTHONPATH": str(ROOT),
        "RECMESH_API_KEY": api_key or "",
        "RECMESH_BENCH_OPTIONS": json.dumps(options or {}),
    }
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if pids is not None:
        pids["locust"] = proc.pid
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not record.exists():
        raise RuntimeError(f"locust failed ({proc.returncode}):\n{output.decode(errors='replace')[-4000:]}")
    return users, usage.ru_utime + usage.ru_stime


def py_spy(pids: dict[str, int], seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """Sample every process with py-spy (Python frames, idle excluded) for `seconds`: a flame graph per process in
    out/<name>.svg."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                binary,
                "record",
                "--nonblocking",
                "--rate",
                "200",
                "--duration",
                str(max(1, int(seconds))),
                "--pid",
                str(pid),
                "--format",
                "flamegraph",
                "--output",
                str(out / f"{name}.svg"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
        if name != "redis"
    ]


# ------------------------------------------------------------------------------------------------ steps
def run_step(
    stack: Any,
    protocol: str,
    rate: float,
    duration: float,
    sessions: Path,
    run_dir: Path,
    csv_dir: Path | None,
    profile: Path | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    pids = {p.name: p.popen.pid for p in stack.processes}
    if stack.redis is not None:
        pids["redis"] = stack.redis.pid
    host = stack.http_url if protocol == "rest" else stack.grpc_address
    tag = f"{rate:g}" + ("-options" if options else "")
    record = run_dir / f"step-{tag}.npz"
    record.unlink(missing_ok=True)
    csv_prefix = csv_dir / f"{protocol}-{tag}" if csv_dir else None
    degraded_before = degraded_counts(stack.http_url)
    before = {name: cpu_of(pid) for name, pid in pids.items()}
    busy0, total0 = machine_busy()
    wall0 = time.monotonic()
    spies = py_spy(pids, duration * 0.8, profile) if profile else []
    sampler = Sampler(dict(pids))
    sampler.start()
    users, locust_cpu_all = run_locust(
        protocol,
        host,
        rate,
        duration,
        sessions,
        record,
        csv_prefix,
        pids=sampler.pids,
        api_key=stack.api_key,
        options=options,
    )
    sampler.stop()
    wall = time.monotonic() - wall0
    busy1, total1 = machine_busy()
    after = {name: cpu_of(pid) for name, pid in pids.items()}
    degraded_after = degraded_counts(stack.http_url)
    for spy in spies:
        spy.wait(timeout=60)

    records = Records.load(record)
    summary = ghz_summary(records, name=f"recmesh {protocol} {rate:g}/s")
    count = max(len(records), 1)
    cpu = {name: after[name] - before[name] for name in pids}
    cpu["locust"] = records.cpu_s if not math.isnan(records.cpu_s) else locust_cpu_all
    ours = sum(cpu.values())
    machine = busy1 - busy0
    step = {
        **summary,
        "offered_rps": rate,
        "users": users,
        "duration_s": duration,
        "by_kind": by_kind(records),
        "per_stage_ms": stage_percentiles(records),
        "schedule": schedule_lag(records),
        # answers that skipped a hop (e.g. ranking out of budget): 200s, but not the full pipeline
        "degraded": {
            k: int(v - degraded_before.get(k, 0)) for k, v in degraded_after.items() if v > degraded_before.get(k, 0)
        },
        "cpu_seconds_per_request": {name: round(s / count, 7) for name, s in cpu.items()},
        "cpu_seconds_per_request_total": round(ours / count, 7),
        "cpu_cores_busy": {name: round(s / wall, 3) for name, s in cpu.items()},
        "machine": {
            "busy_cores": round(machine / wall, 3),
            "capacity_cores": round((total1 - total0) / wall, 3),
            "other_busy_cores": round(max(0.0, machine - ours) / wall, 3),  # other engineers' work, the OS
        },
    }
    print(
        f"  {protocol} offered {rate:g}/s: achieved {step['rps']:.0f}/s, p50 {percentile_ms(step, 50):.2f} ms, "
        f"p99 {percentile_ms(step, 99):.2f} ms, errors {sum(step['errorDistribution'].values())}, "
        f"degraded {sum(step['degraded'].values())}, "
        f"machine busy {step['machine']['busy_cores']:.2f} cores (others {step['machine']['other_busy_cores']:.2f})",
        file=sys.stderr,
    )
    series = over_time(records)
    origin = float(records.start.min()) if len(records) else wall0
    step["machine_series"] = sampler.series(origin)
    step["windows"] = window_stats(series, step["machine_series"])
    series["other_cores"] = step["machine_series"]["other_cores"]
    series["other_t"] = step["machine_series"]["t"]
    return step, series


def meets(step: dict[str, Any], p50_ms: float = P50_GOAL_MS) -> bool:
    errors = sum(step["errorDistribution"].values()) + sum(step.get("degraded", {}).values())
    return (
        errors == 0
        and step["rps"] >= 0.98 * step["offered_rps"]
        and percentile_ms(step, 99) <= P99_GOAL_MS
        and percentile_ms(step, 50) <= p50_ms
    )


def knee(steps: list[dict[str, Any]]) -> float | None:
    """The highest offered load served in full with no error and p99 within the goal (p50 not required)."""
    good = [s["offered_rps"] for s in steps if meets(s, p50_ms=math.inf)]
    return max(good) if good else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools.stack import LocalStack
    from devtools.up import parse_replicas
    from recmesh import bundle

    cache = Path(args.cache)
    if args.models_dir:
        models_dir, source = Path(args.models_dir).resolve(), Path(args.sessions or BEAUTY)
    else:
        models_dir, generated = bench_bundle(args.items, cache, epochs=args.epochs)
        source = Path(args.sessions) if args.sessions else generated
    bundle_path = bundle.resolve(models_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = cache / "runs" / f"{stamp}-{args.protocol}"
    run_dir.mkdir(parents=True, exist_ok=True)
    known = set((bundle_path / "items.txt").read_text().split("\n"))
    sessions = run_dir / "sessions.txt"
    n_sessions = sample_sessions(source, known, sessions)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_dir = Path(args.csv_dir) if args.csv_dir else out.with_name(out.stem + "-csv")
    csv_dir.mkdir(parents=True, exist_ok=True)
    steps_rates = sorted(set(args.steps or []) | {args.rate})

    print(f"floor: Model.recommend in process on {bundle_path.name} ...", file=sys.stderr)
    floor = measure_floor(bundle_path, sessions, n=args.floor_requests)
    print(
        f"  floor p50 {floor['p50_us']} µs with the default recipe {floor['recipe']}, {floor['ann_only_p50_us']} µs "
        f"ANN only ({floor['served_over_ann_only']}x), {floor['catalogue_items']:,} items",
        file=sys.stderr,
    )

    steps: list[dict[str, Any]] = []
    series: list[dict[str, list[float]]] = []
    print("starting the stack (redis, embedding-store, candidate-generation, ranking, gateway) ...", file=sys.stderr)
    (run_dir / "logs").mkdir(exist_ok=True)
    replicas = parse_replicas(args.replicas)
    with LocalStack(models_dir, replicas=replicas, log_dir=run_dir / "logs", auth=True) as stack:  # keys checked
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g}s at {steps_rates[0]:g}/s", file=sys.stderr)
            run_locust(
                args.protocol,
                stack.http_url if args.protocol == "rest" else stack.grpc_address,
                steps_rates[0],
                args.warmup,
                sessions,
                run_dir / "warmup.npz",
                None,
                api_key=stack.api_key,
            )
        for rate in steps_rates:
            profile = Path(args.profile) / f"{args.protocol}-{rate:g}" if args.profile and rate == args.rate else None
            step, s = run_step(stack, args.protocol, rate, args.duration, sessions, run_dir, csv_dir, profile)
            steps.append(step)
            series.append(s)
        if args.catalog_compare:
            catalog_step = compare_catalog_options(args, stack, bundle_path, sessions, run_dir, csv_dir)

    main_step = next(s for s in steps if s["offered_rps"] == args.rate)
    catalog_cost = None
    if args.catalog_compare:
        catalog_cost = catalog_cost_of(main_step, catalog_step)
    total_server_cpu = sum(v for k, v in main_step["cpu_seconds_per_request"].items() if k != "locust")
    report = {
        **{k: v for k, v in main_step.items()},
        "name": f"recmesh {args.protocol} {args.rate:g}/s",
        "protocol": args.protocol,
        "meets_goal": meets(main_step),
        "goal": {"rps": args.rate, "p50_ms": P50_GOAL_MS, "p99_ms": P99_GOAL_MS, "errors": 0},
        "knee_rps": knee(steps),
        "max_achieved_rps": round(max(s["rps"] for s in steps), 1),
        "floor_us_per_request": floor["p50_us"],
        "floor": floor,
        "ratio_to_floor": {
            "p50_latency": round(percentile_ms(main_step, 50) * 1000 / floor["p50_us"], 1),
            "server_cpu_per_request": round(total_server_cpu * 1e6 / floor["p50_us"], 1),
        },
        "catalogue_items": floor["catalogue_items"],
        "model_version": floor["model_version"],
        "sessions": {"source": shown(source), "sampled": n_sessions},
        "options": {
            "items": args.items,
            "rate": args.rate,
            "duration_s": args.duration,
            "steps": steps_rates,
            "warmup_s": args.warmup,
            "replicas": args.replicas,
            "models_dir": shown(models_dir),
        },
        "hardware": hardware(),
        "catalog_compare": catalog_cost,
        "locust_csv": str(csv_dir),
        "raw_records": shown(run_dir),
        "steps": steps,
    }
    out.write_text(json.dumps(report, indent=1))
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(
        steps,
        series,
        png,
        f"recmesh {args.protocol.upper()}: {report['catalogue_items']:,} items, "
        f"{report['hardware']['cpus']} CPUs, load generator on the same machine",
    )
    print(f"wrote {out}, {png}, {csv_dir}/", file=sys.stderr)
    return report


def compare_catalog_options(
    args: argparse.Namespace, stack: Any, bundle_path: Path, sessions: Path, run_dir: Path, csv_dir: Path
) -> dict[str, Any]:
    """The main step again with a typical filter and a diversity cap on every recommendation (same stack, same
    rate, right after the plain one), and whether those answers still fill k."""
    from bench.catalog_options import fills_k, typical_options

    options, passing = typical_options(bundle_path)
    print(f"catalogue step: {options} (passes {passing:.1%} of items)", file=sys.stderr)
    step, _ = run_step(stack, args.protocol, args.rate, args.duration, sessions, run_dir, csv_dir, options=options)
    step["catalog_options"] = options
    step["filter_pass_fraction"] = round(passing, 4)
    step["fill"] = fills_k(stack.http_url, stack.auth_headers, sessions, options, k=10)
    return step


def catalog_cost_of(plain: dict[str, Any], filtered: dict[str, Any]) -> dict[str, Any]:
    """CPU per request of our processes (load generator excluded) with the options ÷ without, same run."""

    def ours(step: dict[str, Any]) -> float:
        return sum(v for k, v in step["cpu_seconds_per_request"].items() if k != "locust")

    return {
        "options": filtered["catalog_options"],
        "filter_pass_fraction": filtered["filter_pass_fraction"],
        "plain_cpu_us_per_request": round(ours(plain) * 1e6, 1),
        "options_cpu_us_per_request": round(ours(filtered) * 1e6, 1),
        "cpu_ratio": round(ours(filtered) / ours(plain), 3),
        "per_process_us": {
            name: [round(plain["cpu_seconds_per_request"][name] * 1e6, 1), round(v * 1e6, 1)]
            for name, v in filtered["cpu_seconds_per_request"].items()
        },
        "p50_ms": [round(percentile_ms(plain, 50), 2), round(percentile_ms(filtered, 50), 2)],
        "p99_ms": [round(percentile_ms(plain, 99), 2), round(percentile_ms(filtered, 99), 2)],
        "rps": [round(plain["rps"], 1), round(filtered["rps"], 1)],
        "errors": [sum(plain["errorDistribution"].values()), sum(filtered["errorDistribution"].values())],
        "degraded": [sum(plain["degraded"].values()), sum(filtered["degraded"].values())],
        "fill": filtered["fill"],
        "step": {k: v for k, v in filtered.items() if k not in ("machine_series",)},
    }


def parse_steps(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000, help="catalogue size of the bench bundle")
    ap.add_argument("--rate", type=float, default=1200, help="offered requests/s of the main step")
    ap.add_argument("--duration", type=float, default=60, help="seconds per step")
    ap.add_argument(
        "--steps",
        type=parse_steps,
        default=None,
        help="offered rates to step through, e.g. 400,800,1200,1600 (--rate is added)",
    )
    ap.add_argument("--protocol", choices=sorted(USER_CLASS), default="rest")
    ap.add_argument("--json", default="runs/bench/serve.json", help="the report (ghz-compatible summary)")
    ap.add_argument("--png", default=None, help="latency plot (default: next to --json)")
    ap.add_argument("--csv-dir", default=None, help="locust CSVs (default: <json stem>-csv/ next to --json)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds of load before the measured steps")
    ap.add_argument("--models-dir", default=None, help="serve this models dir instead of the bench bundle")
    ap.add_argument(
        "--sessions",
        default=None,
        help="sessions to sample (user-lines); default: the bench "
        f"bundle's training sessions, or {BEAUTY} with --models-dir",
    )
    ap.add_argument("--replicas", action="append", default=[], help="e.g. ranking=2 (repeatable)")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="bench bundles and raw records")
    ap.add_argument("--epochs", type=int, default=5, help="word2vec epochs of the bench bundle")
    ap.add_argument("--floor-requests", type=int, default=2000, help="requests timed for the in-process floor")
    ap.add_argument(
        "--catalog-compare",
        action="store_true",
        help="run the --rate step again with a filter passing ~20%% of items and a diversity cap; report the CPU ratio",
    )
    ap.add_argument("--profile", default=None, help="py-spy every process during the --rate step into this dir")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    return 0 if report["count"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
