"""The PNGs of `python -m bench.scaling`: knee per replica count, and the failover timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(report: dict[str, Any], path: Path) -> None:
    """Bars: the knee (served in full, p99 <= 65 ms) and the best full-pipeline throughput, 1 vs 3 replicas."""
    plt = _pyplot()
    runs = [*report["scale"], *report["unconstrained"]]
    labels = [
        f"{r['stage'].replace('_', '-')}\n×{r['replicas']} "
        + (f"({r['cpu_limit_per_replica']:g} core each)" if r["cpu_limit_per_replica"] else "(no limit)")
        for r in runs
    ]
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(11, 4.4))
    ax.bar(x - 0.2, [r["knee_rps"] or 0 for r in runs], 0.4, label="knee: offered load served in full, p99 ≤ 65 ms")
    ax.bar(x + 0.2, [r["max_full_pipeline_rps"] for r in runs], 0.4, label="best full-pipeline throughput")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("requests/s")
    hw = report["hardware"]
    ax.set_title(
        f"Replica scaling on one machine ({hw['cpus']} CPUs, {hw['cpu']}), load generator included", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_failover(report: dict[str, Any], path: Path) -> None:
    """Latency, throughput, errors and degraded answers per second, with the kills and restarts marked."""
    plt = _pyplot()
    fail = report["failover"]
    s = fail["series"]
    fig, (ax_l, ax_c) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    ax_l.plot(s["t"], s["p50"], label="p50")
    ax_l.plot(s["t"], s["p99"], label="p99")
    ax_l.axhline(65, color="red", linewidth=0.6, linestyle="--", label="p99 goal 65 ms")
    ax_l.set_yscale("log")
    ax_l.set_ylabel("latency, ms (1 s windows)")
    ax_l.legend(fontsize=8, loc="upper left")
    ax_c.plot(s["t"], s["rps"], label="requests sent/s")
    ax_c.bar(s["t"], s["errors"], width=0.8, color="red", label="errors/s")
    ax_c.bar(s["degraded_t"], s["degraded"], width=0.8, color="orange", alpha=0.7, label="degraded answers/s")
    ax_c.set_ylabel("per second")
    ax_c.set_xlabel("seconds")
    ax_c.legend(fontsize=8, loc="center left")
    for ax in (ax_l, ax_c):
        ax.grid(True, alpha=0.3)
        for mark in fail["events"]:
            ax.axvline(mark["t"], color="grey", linewidth=0.8)
    for mark in fail["events"]:
        ax_l.text(
            mark["t"] + 0.3,
            0.97,
            mark["event"],
            transform=ax_l.get_xaxis_transform(),
            fontsize=7,
            va="top",
            rotation=90,
            color="grey",
        )
    ax_l.set_title(
        f"Replicas killed under {fail['rate']:g} req/s: {fail['errors']} errors, {fail['degraded']} degraded answers "
        f"of {fail['requests']:,} requests",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
