"""Load-test reports: ghz-compatible JSON summaries and latency plots, from raw per-request records.

A ghz summary (https://ghz.sh/docs/output, JSON format) has `count`, `total`, `average`, `fastest`, `slowest`
(durations in nanoseconds, as ghz writes Go's time.Duration), `rps`, `latencyDistribution` (percentiles 10 .. 99,
computed over the successful requests the way ghz does), `statusCodeDistribution`, `errorDistribution` and a
10-bucket `histogram` (marks in seconds). `details` (one row per request) is left out: the raw records are kept
next to the run instead.

    records = Records.load("runs/bench/rest-1200/step-1200.npz")
    summary = ghz_summary(records, name="rest 1200/s")
    plot(steps, "docs/bench/rest.png")
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

PERCENTAGES = (10, 25, 50, 75, 90, 95, 99)
STAGES = ("events", "embeddings", "candidates", "ranking", "popular", "total")
NS = 1_000_000_000


@dataclass
class Records:
    """What the locust user recorded, one entry per request (arrays of equal length)."""

    name: np.ndarray  # str: the request kind (recommend, event, similar, rank, ...)
    start: np.ndarray  # float64 s (monotonic): when the request was sent
    intended: np.ndarray  # float64 s (monotonic): when the arrival schedule wanted it sent
    latency_ms: np.ndarray  # float64: send -> answer read
    status: np.ndarray  # str: HTTP status ("200") or gRPC code name ("OK")
    error: np.ndarray  # str: "" when the request succeeded
    stages: dict[str, np.ndarray]  # stage -> float64 ms from Server-Timing (NaN when absent)
    cpu_s: float = math.nan  # the load generator's own CPU seconds during the test

    @classmethod
    def load(cls, path: Path | str) -> Records:
        with np.load(path, allow_pickle=False) as z:
            stages = {k.removeprefix("stage_"): z[k] for k in z.files if k.startswith("stage_")}
            return cls(
                z["name"],
                z["start"],
                z["intended"],
                z["latency_ms"],
                z["status"],
                z["error"],
                stages,
                float(z["cpu_s"]) if "cpu_s" in z.files else math.nan,
            )

    def save(self, path: Path | str) -> None:
        arrays: dict[str, Any] = {f"stage_{k}": v for k, v in self.stages.items()}
        arrays.update(
            name=self.name,
            start=self.start,
            intended=self.intended,
            latency_ms=self.latency_ms,
            status=self.status,
            error=self.error,
            cpu_s=np.float64(self.cpu_s),
        )
        np.savez_compressed(path, **arrays)

    def __len__(self) -> int:
        return len(self.latency_ms)

    @property
    def ok(self) -> np.ndarray:
        return self.error == ""

    def window_s(self) -> float:
        """From the first send to the last answer."""
        if not len(self):
            return 0.0
        return float(np.max(self.start + self.latency_ms / 1000) - np.min(self.start))

    def after(self, seconds: float) -> Records:
        """The records sent at least `seconds` after the first one (drops a warm-up)."""
        if not len(self):
            return self
        keep = self.start >= np.min(self.start) + seconds
        return Records(
            self.name[keep],
            self.start[keep],
            self.intended[keep],
            self.latency_ms[keep],
            self.status[keep],
            self.error[keep],
            {k: v[keep] for k, v in self.stages.items()},
            self.cpu_s,
        )


def ghz_percentiles(sorted_s: np.ndarray) -> list[dict[str, int]]:
    """ghz's latencyDistribution: the value at rank p% of the sorted latencies (seconds in, nanoseconds out)."""
    out = []
    n = len(sorted_s)
    for p in PERCENTAGES:
        ip = p / 100 * n
        di = int(ip)
        if ip == di:
            di -= 1
        out.append({"percentage": p, "latency": round(float(sorted_s[max(di, 0)]) * NS)})
    return out


def histogram(sorted_s: np.ndarray, buckets: int = 10) -> list[dict[str, float]]:
    """ghz's histogram: `buckets` + 1 marks (seconds) from fastest to slowest, count and frequency of each."""
    fastest, slowest = float(sorted_s[0]), float(sorted_s[-1])
    marks = [fastest + (slowest - fastest) / buckets * i for i in range(buckets)] + [slowest]
    counts = np.diff(np.searchsorted(sorted_s, marks, side="right"), prepend=0)
    return [
        {"mark": m, "count": int(c), "frequency": float(c) / len(sorted_s)} for m, c in zip(marks, counts, strict=True)
    ]


def ghz_summary(records: Records, name: str = "", total_s: float | None = None) -> dict[str, Any]:
    """The ghz JSON report of `records` (durations in nanoseconds)."""
    total_s = records.window_s() if total_s is None else total_s
    count = len(records)
    summary: dict[str, Any] = {
        "name": name,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": count,
        "total": round(total_s * NS),
        "average": round(float(np.mean(records.latency_ms)) * 1e6) if count else 0,
        "fastest": 0,
        "slowest": 0,
        "rps": count / total_s if total_s > 0 else 0.0,
        "errorDistribution": _counts(records.error[~records.ok]),
        "statusCodeDistribution": _counts(records.status),
        "latencyDistribution": [],
        "histogram": [],
    }
    ok_s = np.sort(records.latency_ms[records.ok]) / 1000
    if ok_s.size:
        summary["fastest"] = round(float(ok_s[0]) * NS)
        summary["slowest"] = round(float(ok_s[-1]) * NS)
        summary["latencyDistribution"] = ghz_percentiles(ok_s)
        summary["histogram"] = histogram(ok_s)
    return summary


def _counts(values: np.ndarray) -> dict[str, int]:
    keys, counts = np.unique(values, return_counts=True)
    return {str(k): int(c) for k, c in zip(keys, counts, strict=True)}


def percentile_ms(summary: dict[str, Any], p: int) -> float:
    """A percentile of a ghz summary, in milliseconds (NaN if there is none)."""
    for row in summary.get("latencyDistribution", []):
        if row["percentage"] == p:
            return float(row["latency"]) / 1e6
    return math.nan


def stage_percentiles(records: Records, kinds: tuple[str, ...] = ("recommend", "recommend_user")) -> dict[str, Any]:
    """p50/p99 (ms) of each Server-Timing stage over the successful recommendations, as the gateway timed them."""
    mask = records.ok & np.isin(records.name, kinds)
    out: dict[str, Any] = {}
    for stage in STAGES:
        values = records.stages.get(stage)
        if values is None:
            continue
        v = values[mask]
        v = v[~np.isnan(v)]
        if v.size:
            out[stage] = {"p50": _r(np.percentile(v, 50)), "p99": _r(np.percentile(v, 99)), "n": int(v.size)}
    return out


def by_kind(records: Records) -> dict[str, dict[str, Any]]:
    """count, errors, p50 and p99 (ms) per request kind."""
    out = {}
    for kind in sorted(set(records.name.tolist())):
        mask = records.name == kind
        lat = records.latency_ms[mask & records.ok]
        out[kind] = {
            "count": int(mask.sum()),
            "errors": int((mask & ~records.ok).sum()),
            "p50_ms": _r(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": _r(np.percentile(lat, 99)) if lat.size else None,
        }
    return out


def schedule_lag(records: Records) -> dict[str, float]:
    """How late requests left compared with the open-loop arrival schedule (ms), and the latency measured from
    the intended send time (what a client arriving on schedule would have seen: no coordinated omission)."""
    if not len(records):
        return {}
    lag = (records.start - records.intended) * 1000
    corrected = records.latency_ms + np.maximum(lag, 0)
    return {
        "lag_p50_ms": _r(np.percentile(lag, 50)),
        "lag_p99_ms": _r(np.percentile(lag, 99)),
        "late_over_5ms_fraction": _r(float(np.mean(lag > 5)), 4),
        "corrected_p50_ms": _r(np.percentile(corrected, 50)),
        "corrected_p99_ms": _r(np.percentile(corrected, 99)),
    }


def over_time(records: Records, window_s: float = 1.0) -> dict[str, list[float]]:
    """Per `window_s` window (by send time): seconds since the first send, achieved rps, p50/p90/p99 (ms)."""
    out: dict[str, list[float]] = {"t": [], "rps": [], "p50": [], "p90": [], "p99": [], "errors": []}
    if not len(records):
        return out
    t = records.start - np.min(records.start)
    bins = np.floor(t / window_s).astype(int)
    for b in range(int(bins.max()) + 1):
        mask = bins == b
        lat = records.latency_ms[mask & records.ok]
        out["t"].append(b * window_s)
        out["rps"].append(float(mask.sum()) / window_s)
        out["errors"].append(float((mask & ~records.ok).sum()))
        for p in (50, 90, 99):
            out[f"p{p}"].append(float(np.percentile(lat, p)) if lat.size else math.nan)
    return out


def window_stats(
    series: dict[str, list[float]], machine: dict[str, list[float]], quiet_cores: float = 0.2
) -> dict[str, Any]:
    """Latency per 1 s window read against the rest of the machine: the median window p50/p99, the share of
    windows whose p99 met the 65 ms goal, and the same over the "quiet" windows, when processes other than ours
    used less than `quiet_cores` cores (the machine is shared). Every window is reported; none is dropped."""
    p50, p99 = np.asarray(series["p50"], float), np.asarray(series["p99"], float)
    valid = ~np.isnan(p99)
    other = np.full(len(p99), np.nan)
    if machine.get("t"):
        mt = np.asarray(machine["t"], float) + 0.5  # interval centres
        for i, t in enumerate(np.asarray(series["t"], float) + 0.5):
            j = int(np.argmin(np.abs(mt - t)))
            if abs(mt[j] - t) <= 1.0:
                other[i] = machine["other_cores"][j]
    quiet = valid & (other < quiet_cores)
    return {
        "windows": int(valid.sum()),
        "median_p50_ms": _r(np.median(p50[valid])) if valid.any() else None,
        "median_p99_ms": _r(np.median(p99[valid])) if valid.any() else None,
        "share_p99_within_65ms": _r(float(np.mean(p99[valid] <= 65))) if valid.any() else None,
        "quiet_cores_below": quiet_cores,
        "quiet_windows": int(quiet.sum()),
        "quiet_median_p50_ms": _r(np.median(p50[quiet])) if quiet.any() else None,
        "quiet_median_p99_ms": _r(np.median(p99[quiet])) if quiet.any() else None,
        "median_other_cores": _r(np.nanmedian(other)) if (~np.isnan(other)).any() else None,
    }


def _r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def plot(steps: list[dict[str, Any]], series: list[dict[str, list[float]]], path: Path | str, title: str) -> None:
    """Two panels: p50/p90/p99 over time (the steps one after another), and p50/p99 + achieved rps over offered
    load. `steps` are the step reports (offered_rps, rps, latencyDistribution), `series` their `over_time`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(13, 4.6))
    offset = 0.0
    for step, s in zip(steps, series, strict=True):
        t = np.asarray(s["t"]) + offset
        for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ax_t.plot(
                t,
                s[p],
                style,
                color=f"C{('p50', 'p90', 'p99').index(p)}",
                label=p if offset == 0 else None,
                linewidth=1.2,
            )
        if len(t):
            ax_t.axvline(offset, color="grey", linewidth=0.5)
            ax_t.text(
                offset + 0.5,
                0.97,
                f"{step['offered_rps']:g}/s",
                transform=ax_t.get_xaxis_transform(),
                fontsize=8,
                va="top",
                color="grey",
            )
            offset = float(t[-1]) + 1.0
    ax_t.set_yscale("log")
    ax_o = ax_t.twinx()  # what the rest of the machine (other people's jobs) was using meanwhile
    offset = 0.0
    for s in series:
        if s.get("other_t"):
            ax_o.fill_between(
                np.asarray(s["other_t"]) + offset, s["other_cores"], step="post", color="grey", alpha=0.2, linewidth=0
            )
        if s["t"]:
            offset += float(s["t"][-1]) + 1.0
    ax_o.set_ylim(0, 4)
    ax_t.set_zorder(ax_o.get_zorder() + 1)  # latency lines above the grey area
    ax_t.patch.set_visible(False)
    ax_o.set_ylabel("cores used by other processes (grey)", color="grey")
    ax_t.set_xlabel("seconds (steps one after another; label = offered load)")
    ax_t.set_ylabel("latency, ms (1 s windows)")
    ax_t.axhline(65, color="red", linewidth=0.6, linestyle="--")
    ax_t.axhline(10, color="green", linewidth=0.6, linestyle="--")
    ax_t.legend(loc="upper left")
    ax_t.grid(True, which="both", alpha=0.3)

    offered = [s["offered_rps"] for s in steps]
    ax_l.plot(offered, [percentile_ms(s, 50) for s in steps], "o-", label="p50")
    ax_l.plot(offered, [percentile_ms(s, 99) for s in steps], "s-", label="p99")
    ax_l.axhline(65, color="red", linewidth=0.6, linestyle="--", label="p99 goal 65 ms")
    ax_l.axhline(10, color="green", linewidth=0.6, linestyle="--", label="p50 goal 10 ms")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("offered load, requests/s")
    ax_l.set_ylabel("latency, ms")
    ax_l.grid(True, which="both", alpha=0.3)
    ax_r = ax_l.twinx()
    ax_r.plot(offered, [s["rps"] for s in steps], "^-", color="C4", label="achieved rps")
    ax_r.plot(offered, offered, color="C4", linewidth=0.5, alpha=0.5)
    ax_r.set_ylabel("achieved requests/s", color="C4")
    top = max([*offered, *(s["rps"] for s in steps)]) * 1.1
    ax_r.set_ylim(0, top)
    lines = ax_l.get_legend_handles_labels()
    more = ax_r.get_legend_handles_labels()
    ax_l.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a benchmark's JSON report (its folder made if need be) and say where on stderr."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return out
