"""Replay held-out sessions event by event through the served stack; the hits must equal the offline evaluation.

    python -m bench.replay --bundle models/<version> --data data/beauty.txt --users 2000

Starts the stack (devtools.stack.LocalStack: Redis, the three services, the gateway) on the bundle alone. For each of
the first ``--users`` test users of the leave-one-out split (recmesh.evaluate.protocol), posts the user's history
as events (one REST batch: all views, oldest first, so the type weights are neutral and the session vector is the
offline one), then asks ``POST /v1/recommend {"user_id": ..., "k": 10}`` with the bundle's candidate count and
checks whether the held-out item is in the answer. The same users go through recmesh.evaluate.run.evaluate
(pipeline system, same ``limit``), and through its steps in process to compare each user's top 10.

The replay backfills whole histories in one call each, so the stack runs with EVENT_RATE_LIMIT=0 (the limit is
for live traffic) and REDIS_TIMEOUT_MS=1000 (equality, not latency, is measured). EVENTS_PER_USER is the
gateway's default (100) unless ``--events-per-user`` says otherwise: a history longer than what the gateway keeps
is excluded only as far as it is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.events import write_section
from devtools.stack import LocalStack
from recmesh.bundle import load_manifest
from recmesh.data.load import load_dataset
from recmesh.data.sessions import Dataset
from recmesh.evaluate.protocol import leave_one_out
from recmesh.evaluate.run import evaluate
from recmesh.pipeline import MAX_SESSION, Model, load_model
from serving.limits import DEFAULT_EVENTS_PER_VISITOR as MAX_EVENTS
from serving.limits import MAX_EVENTS_PER_CALL as REST_BATCH

# The replay checks equality, not latency: no answer may degrade because the machine is busy (a history read
# that times out would recommend without it), so the budget and the gateway's Redis timeout are generous.
BUDGET_MS = 10_000


def offline_top(model: Model, history: np.ndarray, k: int = 10) -> list[str]:
    """recmesh.evaluate.run's pipeline system for one user (the bundle's default recipe): the head of its ranking."""
    recent = history[-MAX_SESSION:]
    pool = model.candidates(recent, model.default_recipe, np.unique(history))
    ranked, _ = model.rank(recent, pool.rows, pool.scores)
    return [model.item_ids[r] for r in ranked[:k]]


def replay(
    bundle_dir: Path, dataset: Dataset, users: int, events_per_user: int = MAX_EVENTS, progress: bool = True
) -> dict[str, Any]:
    bundle_dir = bundle_dir.resolve()
    model = load_model(bundle_dir)
    n_candidates = int(model.manifest["params"]["candidates"])
    split = leave_one_out(dataset, model.item_ids)
    histories, targets = split.test_history[:users], split.test_target[:users]

    started = time.perf_counter()
    report = evaluate(bundle_dir, dataset, limit=users, progress=False)
    offline_seconds = time.perf_counter() - started

    run = uuid.uuid4().hex[:8]
    served_hits: list[bool] = []
    offline_hits: list[bool] = []
    differences: list[dict[str, Any]] = []
    degraded: Counter[str] = Counter()
    env = {"EVENT_RATE_LIMIT": "0", "EVENTS_PER_USER": str(events_per_user), "REDIS_TIMEOUT_MS": "1000"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # LocalStack's processes inherit the environment
    with tempfile.TemporaryDirectory(prefix="recmesh-replay-") as models:
        (Path(models) / bundle_dir.name).symlink_to(bundle_dir)  # a models dir holding this bundle only
        try:
            stack = LocalStack(Path(models)).start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            started = time.perf_counter()
            with httpx.Client(base_url=stack.http_url, timeout=30) as http:
                for n, (history, target) in enumerate(zip(histories, targets, strict=True)):
                    user, items = f"replay-{run}-{n}", [model.item_ids[r] for r in history]
                    start_ms = time.time_ns() // 1_000_000 - len(items)
                    events = [
                        {"user_id": user, "item_id": item, "type": "view", "timestamp_ms": start_ms + t}
                        for t, item in enumerate(items)
                    ]
                    for chunk in range(0, len(events), REST_BATCH):
                        http.post("/v1/events", json={"events": events[chunk : chunk + REST_BATCH]}).raise_for_status()
                    answer = http.post(
                        "/v1/recommend",
                        json={
                            "user_id": user,
                            "k": 10,
                            "options": {"budget_ms": BUDGET_MS},
                        },
                    )
                    answer.raise_for_status()
                    body = answer.json()
                    degraded.update(f"{d['stage']}: {d['reason']}" for d in body["degradations"])
                    served = [i["item_id"] for i in body["items"]]
                    expected = offline_top(model, history)
                    wanted = model.item_ids[target]
                    served_hits.append(wanted in served)
                    offline_hits.append(wanted in expected)
                    if served != expected:
                        differences.append(
                            {
                                "user": n,
                                "history_length": len(items),
                                "hit_served": wanted in served,
                                "hit_offline": wanted in expected,
                                "served_minus_offline": sorted(set(served) - set(expected)),
                                "in_history": sorted(set(served) & set(items)),
                                "degradations": [f"{d['stage']}: {d['reason']}" for d in body["degradations"]],
                            }
                        )
                    if progress and (n + 1) % 500 == 0:
                        print(f"  {n + 1} users replayed", file=sys.stderr)
            served_seconds = time.perf_counter() - started
        finally:
            stack.stop()

    lengths = np.array([len(h) for h in histories])
    served_hr = float(np.mean(served_hits))
    offline_hr = float(report["systems"]["pipeline"]["hr@10"])
    return {
        "bundle": model.version,
        "dataset": dataset.name,
        "users": len(histories),
        "candidates": n_candidates,
        "recipe": str(model.default_recipe),
        "events_per_user": events_per_user,
        "users_with_history_over_events_per_user": int((lengths > events_per_user).sum()),
        "users_with_history_over_max_session": int((lengths > MAX_SESSION).sum()),
        "events_posted": int(lengths.sum()),
        "offline_hr@10": offline_hr,
        "served_hr@10": served_hr,
        "hr@10_equal": abs(served_hr - offline_hr) < 1e-12,
        "hits_equal_per_user": served_hits == offline_hits,
        "users_with_a_different_top10": len(differences),
        "differences": differences[:20],
        "degradations": dict(degraded),  # the same answer, marked: e.g. vectors from the bundle, not Redis
        "served_seconds": round(served_seconds, 1),
        "offline_seconds": round(offline_seconds, 1),
    }


def markdown(r: dict[str, Any], command: str) -> str:
    cause = ""
    if r["users_with_a_different_top10"]:
        cause = (
            " The users whose top 10 differ have histories longer than the "
            f"{r['events_per_user']} events the gateway keeps per visitor: an item seen before those is not "
            "excluded (offline excludes the whole history)."
        )
    degradations = ", ".join(f"{reason}: {n}" for reason, n in r["degradations"].items()) or "none"
    return "\n".join(
        [
            f"`{command}` (EVENTS_PER_USER={r['events_per_user']}, EVENT_RATE_LIMIT=0, REDIS_TIMEOUT_MS=1000):",
            "",
            "| bundle | data | users | events posted | offline HR@10 | served HR@10 | same hit per user "
            "| users with a different top 10 | histories over EVENTS_PER_USER |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
            f"| {r['bundle']} | {r['dataset']} | {r['users']:,} | {r['events_posted']:,} | {r['offline_hr@10']:.4f} "
            f"| {r['served_hr@10']:.4f} | {'yes' if r['hits_equal_per_user'] else 'NO'} "
            f"| {r['users_with_a_different_top10']} | {r['users_with_history_over_events_per_user']} |",
            "",
            f"Replayed in {r['served_seconds']} s (one event batch + one recommendation per user); degraded "
            f"answers (same items, marked): {degradations}.{cause}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a bundle directory (models/<version>)")
    parser.add_argument("--data", required=True, help="the data set the bundle was trained on")
    parser.add_argument("--users", type=int, default=2000, help="first N test users of the split")
    parser.add_argument("--events-per-user", type=int, default=MAX_EVENTS, help="the gateway's EVENTS_PER_USER")
    parser.add_argument("--out", default="docs/bench/replay.json", help="JSON report")
    parser.add_argument("--doc", default="docs/events.md", help="its replay section for this EVENTS_PER_USER")
    args = parser.parse_args(argv)
    bundle_dir = Path(args.bundle)
    load_manifest(bundle_dir, verify=False)  # fail early and clearly on a wrong path
    result = replay(bundle_dir, load_dataset(args.data), args.users, args.events_per_user)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "differences"}
    print(json.dumps(summary, indent=1))
    command = "python -m bench.replay " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section(Path(args.doc), f"bench:replay-{args.events_per_user}", markdown(result, command))
    print(f"wrote {out} and {args.doc}", file=sys.stderr)
    return 0 if result["hits_equal_per_user"] else 1


if __name__ == "__main__":
    sys.exit(main())
