"""`python -m bench.assign_bench`: what assigning a request to an experiment variant costs, in µs per call.

    python -m bench.assign_bench [--ids 10000] [--repeats 31]

Times, over --ids distinct visitor ids and --repeats rounds, the pure assignment
(recmesh.experiments.assign.assign_variant) and the gateway's whole call (gateway.experiments.Experiments.assign:
unit id, hash, bisect, the prepared Assignment), on a three-variant experiment (50 / 45 / 5). Prints the median
and the fastest round's µs per call, and the CPU (lscpu's model line). The design's budget is 20 µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

from gateway.experiments import Experiments
from recmesh.experiments.assign import assign_variant
from recmesh.experiments.config import ExperimentSet, parse_config

BUDGET_US = 20.0
DOCUMENT = {
    "version": 1,
    "experiments": [
        {
            "name": "ranker-test",
            "status": "running",
            "unit": "visitor",
            "variants": [
                {"name": "control", "share": 50, "options": {}},
                {"name": "no-ranking", "share": 45, "options": {"skip_ranking": True}},
                {"name": "holdout", "share": 5, "holdout": True},
            ],
        }
    ],
}


def cpu_model() -> str:
    """lscpu's "Model name" line, else what platform says."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.strip()
    return f"Model name: {platform.processor() or 'unknown'}"


def per_call_us(call: Callable[[str], object], ids: list[str], repeats: int) -> list[float]:
    """µs per call of each round over every id."""
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for unit in ids:
            call(unit)
        rounds.append((time.perf_counter_ns() - start) / len(ids) / 1000)
    return rounds


async def gateway_experiments(text: str) -> Experiments:
    async def read() -> str:
        return text

    experiments = Experiments(read)
    await experiments.load_now()
    return experiments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000, help="distinct visitor ids per round")
    parser.add_argument("--repeats", type=int, default=31, help="rounds; the median is reported")
    args = parser.parse_args(argv)

    text = json.dumps(DOCUMENT)
    config: ExperimentSet = parse_config(text)
    experiment = config.running
    assert experiment is not None
    experiments = asyncio.run(gateway_experiments(text))
    ids = [f"visitor-{i}" for i in range(args.ids)]

    print(cpu_model())
    print(f"python {platform.python_version()}; {args.ids:,} ids x {args.repeats} rounds")
    for what, call in (
        ("assign_variant (pure)", lambda unit: assign_variant(experiment, unit)),
        ("Experiments.assign (gateway)", lambda unit: experiments.assign(unit, "")),
    ):
        rounds = per_call_us(call, ids, args.repeats)
        median = statistics.median(rounds)
        verdict = "within" if median < BUDGET_US else "OVER"
        print(
            f"{what:30s} median {median:6.2f} µs/call, best {min(rounds):6.2f} ({verdict} the {BUDGET_US:g} µs budget)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
