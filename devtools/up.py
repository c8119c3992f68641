"""`recmesh up`: the whole stack on this machine (devtools/stack.py), training a demo bundle first if there is none.

A process that dies (a crash, an OOM kill, `kill -9`) is restarted with exponential backoff, as a kubelet would
(:meth:`devtools.stack.LocalStack.supervise`), each restart logged on stderr; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from devtools.stack import SERVICES, LocalStack
from recmesh import bundle
from recmesh.data.load import SYNTH, load_dataset


def parse_replicas(specs: list[str]) -> dict[str, int]:
    replicas = {}
    for spec in specs:
        name, _, count = spec.partition("=")
        service = name.replace("-", "_")
        if service not in SERVICES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--replicas {spec!r}: expected <service>=<n> with service in {', '.join(SERVICES)}")
        replicas[service] = int(count)
    return replicas


def parse_cpu_limits(specs: list[str]) -> dict[str, float]:
    """`ranking=0.5` -> {"ranking": 0.5}: cores per replica, for the three services and the gateway."""
    limits = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        service = name.replace("-", "_")
        try:
            cores = float(value)
        except ValueError:
            cores = 0.0
        if service not in (*SERVICES, "gateway") or not 0 < cores <= 1024:
            raise ValueError(
                f"--cpu-limit {spec!r}: expected <service>=<cores> with service in "
                f"{', '.join((*SERVICES, 'gateway'))} and cores > 0, e.g. ranking=0.5"
            )
        limits[service] = cores
    return limits


def run(args: argparse.Namespace) -> int:
    models_dir = Path(args.models_dir)
    replicas, cpu_limits = parse_replicas(args.replicas), parse_cpu_limits(args.cpu_limit)  # before any work
    if not bundle.list_versions(models_dir):
        from recmesh.train.run import train_bundle

        print(f"no bundle in {models_dir}: training a demo bundle on {args.data}", file=sys.stderr)
        train_bundle(load_dataset(args.data), models_dir)
    stack = LocalStack(
        models_dir.resolve(),
        replicas,
        args.http_port,
        args.grpc_port,
        args.redis_url,
        cpu_limits=cpu_limits,
        redis_cache_url=args.redis_cache_url,
        log=lambda line: print(f"recmesh up: {line}", file=sys.stderr, flush=True),
        auth=True,  # a fresh dev key with every scope, printed below (docs/security.md)
    )
    print("starting redis, embedding-store, candidate-generation, ranking, gateway ...", file=sys.stderr)
    stack.start()
    model = bundle.resolve(models_dir)
    items = (model / "items.txt").read_text().split("\n")[:2]
    # JSON only (the gateway refuses other content types) and the dev key (docs/security.md)
    curl = f"curl -s -H 'Content-Type: application/json' -H 'Authorization: Bearer {stack.api_key}'"
    # with the demo catalogue's attributes (recmesh.data.synth): a filter and explanations, an item hidden live
    attributes = json.loads((model / "manifest.json").read_text()).get("catalog", {}).get("attributes", {})
    filtered = json.dumps(
        {"session": [items[0]], "options": {"filter": 'category == "books" and price < 50', "explain": True}}
    )
    catalogue_examples = (
        f"""
  {curl} {stack.http_url}/v1/recommend -d '{filtered}'
  {curl} -X PATCH {stack.http_url}/v1/items/{items[0]} -d '{{"attributes": {{"available": false}}}}'"""
        if {"category", "price"} <= set(attributes)
        else ""
    )
    print(
        f"""
recmesh is up (model {model.name}); logs in {stack.log_dir}
  REST  {stack.http_url}   (OpenAPI: {stack.http_url}/docs, metrics: {stack.http_url}/metrics)
  gRPC  {stack.grpc_address}   (reflection on: grpcurl -plaintext {stack.grpc_address} list)
  redis {stack.redis_url} (events, version pointer; AOF)   cache {stack.redis_cache_url} (vectors)
  API key (every scope, this run only): {stack.api_key}
Try:
  {curl} {stack.http_url}/v1/recommend -d '{{"session": ["{items[0]}", "{items[1]}"], "k": 10}}'
  {curl} {stack.http_url}/v1/items/{items[0]}/similar?k=5
  {curl} {stack.http_url}/v1/events -d '{{"user_id": "u1", "item_id": "{items[0]}", "type": "view"}}'
  {curl} {stack.http_url}/v1/recommend -d '{{"user_id": "u1", "k": 5}}'{catalogue_examples}
A crashed process is restarted (with backoff). Ctrl-C stops everything.""",
        flush=True,
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            stack.supervise()
            time.sleep(0.5)
    finally:
        print("stopping ...", file=sys.stderr)
        stack.stop()
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `up` to the `recmesh` command."""
    up = sub.add_parser("up", help="run Redis + the three services + the gateway locally")
    up.add_argument(
        "--models-dir",
        default=os.environ.get("RECMESH_MODELS_DIR") or "models",
        help="bundles directory; a demo bundle is trained there if it has none (default: $RECMESH_MODELS_DIR if set, "
        "else models)",
    )
    up.add_argument("--data", default=SYNTH, help="data to train the demo bundle on when none exists")
    up.add_argument("--replicas", action="append", default=[], help="e.g. ranking=3 (repeatable)")
    up.add_argument(
        "--cpu-limit",
        action="append",
        default=[],
        help="cores per replica, enforced with a cgroup quota like a pod's CPU limit, e.g. ranking=0.5 "
        "(repeatable; needs a writable cgroup, e.g. root)",
    )
    up.add_argument("--http-port", type=int, default=8080, help="gateway REST port (default: 8080)")
    up.add_argument("--grpc-port", type=int, default=50050, help="gateway gRPC port (default: 50050)")
    up.add_argument(
        "--redis-url", default=None, help="use this Redis (events, version pointer) instead of starting private ones"
    )
    up.add_argument("--redis-cache-url", default=None, help="the vector cache Redis (default: --redis-url)")
    up.set_defaults(func=run)
