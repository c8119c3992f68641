"""`python -m bench.experiment_sim`: a simulated A/B experiment, end to end, on real held-out sessions.

    python -m bench.experiment_sim --data data/beauty.txt --sessions 6000 \\
        --json docs/experiments/beauty-sim.json --png docs/experiments/beauty-sim.png

1. Trains (or reuses, cached under --cache) a bundle on the data file (docs/data.md says where to get it; every
   sequence's last item held out, as in the offline evaluation) and starts the stack as `recmesh up` does.
2. Starts an experiment with `recmesh experiments start`: "full" (the whole pipeline) against "no-ranking"
   (candidates in retrieval order), 50/50 by visitor.
3. Replays held-out sessions through the REST API, one visitor each: the session is the sequence without its
   last item; when the answer holds the visitor's real next item, the visitor "clicks" it (an event whose
   session_id is the answer's recommendation_id, as a shop would send it).
4. `recmesh experiments report` turns the counts into rates with 95 % intervals, a two-proportion test and a
   verdict (JSON and PNG); the run also checks the counts against what it sent.

Progress is printed every 1,000 sessions. Nothing is tuned per run: the click is the visitor's real next item.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "beauty.txt"
EXPERIMENT = {
    "name": "ranking-sim",
    "unit": "visitor",
    "description": "the ranker against retrieval order, on replayed held-out sessions",
    "variants": [
        {"name": "full", "share": 50, "options": {}},
        {"name": "no-ranking", "share": 50, "options": {"skip_ranking": True}},
    ],
}


def bundle_for(data: Path, cache: Path) -> Path:
    """A models dir with a bundle trained on `data` (cached by file name and size)."""
    models = cache / f"{data.stem}-{data.stat().st_size}" / "models"
    if not (models.exists() and any(p.name[0].isdigit() for p in models.iterdir())):
        print(f"training a bundle on {data.name} (once; cached in {models}) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "recmesh.cli", "train", "--data", str(data), "--out", str(models)], check=True
        )
    return models


def held_out(data: Path, n: int, seed: int) -> list[tuple[str, list[str], str]]:
    """(visitor, session, next item) of `n` sequences with at least 3 items, sampled with `seed`."""
    rows = []
    for line in data.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:  # user + at least 3 items
            rows.append((f"sim-{parts[0]}", parts[1:-1], parts[-1]))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def post(url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
        return answer


def replay(stack: Any, sessions: list[tuple[str, list[str], str]], workers: int) -> dict[str, Counter[str]]:
    """Every session once, `workers` at a time; per variant: answers served and clicks sent."""
    sent: dict[str, Counter[str]] = {}
    lock = threading.Lock()
    queue = list(reversed(sessions))
    done = [0]
    start = time.monotonic()

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                visitor, session, target = queue.pop()
            answer = post(
                stack.http_url + "/v1/recommend", stack.auth_headers, {"user_id": visitor, "session": session, "k": 10}
            )
            clicked = target in [item["item_id"] for item in answer["items"]]
            if clicked:
                event = {
                    "user_id": visitor,
                    "item_id": target,
                    "type": "click",
                    "session_id": answer["recommendation_id"],
                }
                post(stack.http_url + "/v1/events", stack.auth_headers, event)
            with lock:
                counts = sent.setdefault(answer["variant"] or "(none)", Counter())
                counts["impressions"] += 1
                counts["click"] += clicked
                done[0] += 1
                if done[0] % 1000 == 0:
                    rate = done[0] / (time.monotonic() - start)
                    print(f"  {done[0]:,} of {len(sessions):,} sessions ({rate:.0f}/s)", file=sys.stderr)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def run(args: argparse.Namespace) -> int:
    from devtools.stack import LocalStack

    data = Path(args.data)
    models = bundle_for(data, Path(args.cache))
    sessions = held_out(data, args.sessions, args.seed)
    with LocalStack(models, auth=True) as stack, tempfile.TemporaryDirectory() as tmp:
        env_cli = [sys.executable, "-m", "recmesh.cli"]
        experiment_file = Path(tmp) / "experiment.json"
        experiment_file.write_text(json.dumps(EXPERIMENT))
        redis = ["--redis-url", stack.redis_url]
        subprocess.run(
            [*env_cli, "experiments", "start", str(experiment_file), *redis, "--models-dir", str(models)], check=True
        )
        time.sleep(2)  # gateways re-read the experiments every second
        print(f"replaying {len(sessions):,} held-out sessions of {data.name} ...", file=sys.stderr)
        sent = replay(stack, sessions, args.workers)
        time.sleep(2)  # the gateway flushes impressions every second
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = [
            *env_cli,
            "experiments",
            "report",
            EXPERIMENT["name"],
            *redis,
            "--json",
            str(out),
            "--png",
            str(args.png),
        ]
        subprocess.run(report, check=True)
    document = json.loads(out.read_text())
    document["simulation"] = {
        "data": data.name,
        "sessions": len(sessions),
        "seed": args.seed,
        "sent": {variant: dict(counts) for variant, counts in sent.items()},
        "click": "the answer holds the visitor's held-out next item",
    }
    out.write_text(json.dumps(document, indent=1))
    print(f"sent per variant: { {v: dict(c) for v, c in sent.items()} }; wrote {out}, {args.png}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.experiment_sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(BEAUTY), help="sessions file (user item1 item2 ...), default beauty.txt")
    ap.add_argument("--sessions", type=int, default=6000, help="held-out sessions replayed")
    ap.add_argument("--seed", type=int, default=0, help="which sessions are sampled")
    ap.add_argument("--workers", type=int, default=8, help="concurrent visitors")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "sim"), help="trained bundles")
    ap.add_argument("--json", default="runs/sim/report.json", help="the report (recmesh experiments report --json)")
    ap.add_argument("--png", default="runs/sim/report.png", help="the report's chart")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"experiment_sim: {args.data} not found (docs/data.md says where to get it)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
