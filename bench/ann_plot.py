"""Frontier plot and recall-tier table of a `bench.ann` report.

python -m bench.ann_plot docs/ann/synth-1m.json --png docs/ann/synth-1m.png   # redraw, print the table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TIERS = (0.90, 0.95, 0.99)
STYLE = {  # one colour per library, stable across reports
    "scann": "tab:red",
    "scann brute force": "tab:pink",
    "faiss hnsw": "tab:blue",
    "hnswlib": "tab:green",
    "faiss ivf-flat": "tab:orange",
    "faiss ivf-pq4fs+refine": "tab:purple",
    "exact (numpy)": "black",
}


def frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pareto front over (recall@100, qps): the points no other point beats on both, by recall."""
    best: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (-p["recall@100"], -p["qps"])):
        if not best or p["qps"] > best[-1]["qps"]:
            best.append(p)
    return sorted(best, key=lambda p: p["recall@100"])


def at_recall(points: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The fastest sweep point (lowest p50) whose recall@100 is at or above `target`."""
    ok = [p for p in points if p["recall@100"] >= target]
    return min(ok, key=lambda p: p["p50_ms"]) if ok else None


def libraries(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in report["points"]:
        out.setdefault(p["library"], []).append(p)
    return out


def knobs(point: dict[str, Any]) -> str:
    keys = ("num_leaves", "leaves_to_search", "reorder", "M", "ef_search", "ef", "nlist", "nprobe", "k_factor")
    params = point["params"]
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params) or params.get("mode", "-")


def table(report: dict[str, Any]) -> str:
    """Markdown: per recall tier and library, the fastest point at or above it."""
    rows = [
        "| recall@100 ≥ | library | point (knobs) | recall@100 | recall@10 | QPS | p50 ms | p99 ms | build s "
        "| memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    libs = libraries(report)
    for tier in TIERS:
        for name, points in libs.items():
            p = at_recall(points, tier)
            if p is None:
                best = max(points, key=lambda q: q["recall@100"])
                rows.append(
                    f"| {tier:.2f} | {name} | not reached (best {best['recall@100']:.3f} at p50 "
                    f"{best['p50_ms']:.3f} ms) | | | | | | | |"
                )
                continue
            rows.append(
                f"| {tier:.2f} | {name} | {knobs(p)} | {p['recall@100']:.3f} | {p['recall@10']:.3f} | "
                f"{p['qps']:,.0f} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {p['build_s']:.1f} | "
                f"{p['memory_mb']:.0f} |"
            )
    d = report.get("default")
    if d:
        rows.append(
            f"\nDefault ({d['library']}, {knobs(d)}): recall@100 {d['recall@100']:.3f}, recall@10 "
            f"{d['recall@10']:.3f}, p50 {d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms, {d['qps']:,.0f} QPS."
        )
    return "\n".join(rows)


# library label in a report -> (backend, search knobs in the point -> key in default_params, build keys)
DEFAULTS = {
    "scann": ("scann", {"leaves_to_search": "num_leaves_to_search", "reorder": "reorder"}, ("num_leaves",)),
    "faiss hnsw": ("faiss_hnsw", {"ef_search": "ef_search"}, ("M", "ef_construction")),
    "hnswlib": ("hnswlib", {"ef": "ef"}, ("M", "ef_construction")),
    "faiss ivf-flat": ("faiss_ivf", {"nprobe": "nprobe"}, ("nlist", "codec")),
}


def remark_defaults(report: dict[str, Any], tolerance: float = 0.02) -> list[str]:
    """Re-flag which sweep points are the backends' current defaults for this catalogue size (after
    default_params changed, without measuring again): same build parameters, each search knob within
    `tolerance` of the default. Returns a note per library whose default matches no measured point."""
    from recmesh.index import default_params

    n = report["items"]
    notes = []
    for name, points in libraries(report).items():
        for p in points:
            p["default"] = name == "exact (numpy)"
        if name == "scann brute force":
            for p in points:
                p["default"] = default_params("scann", n)["mode"] == "brute_force"
        if name not in DEFAULTS:
            continue
        backend, knob_keys, build_keys = DEFAULTS[name]
        want = default_params(backend, n)
        if want.get("mode", "tree_ah") != "tree_ah":
            continue

        def close(
            p: dict[str, Any],
            want: dict[str, Any] = want,
            knob_keys: dict[str, str] = knob_keys,
            build_keys: tuple[str, ...] = build_keys,
        ) -> bool:
            params = p["params"]
            same_build = all(params.get(key) == want[key] for key in build_keys)
            return same_build and all(
                abs(params[knob] - want[key]) <= tolerance * want[key] for knob, key in knob_keys.items()
            )

        match = [p for p in points if close(p)]
        if match:
            best = min(match, key=lambda p: sum(abs(p["params"][k] - want[v]) for k, v in knob_keys.items()))
            best["default"] = True
        else:
            notes.append(f"{name}: default {[want[v] for v in knob_keys.values()]} was not measured")
    report["default"] = next((p for p in report["points"] if p["default"] and p["library"].startswith("scann")), None)
    report["defaults"] = {p["library"]: p for p in report["points"] if p["default"]}
    return notes


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for name, points in libraries(report).items():
        colour = STYLE.get(name)
        ax.scatter([p["recall@100"] for p in points], [p["qps"] for p in points], s=12, alpha=0.3, color=colour)
        front = frontier(points)
        marker = "o" if len(points) > 1 else "s"
        ax.plot(
            [p["recall@100"] for p in front], [p["qps"] for p in front], marker=marker, ms=4, label=name, color=colour
        )
        for p in points:
            if p.get("default"):
                ax.scatter([p["recall@100"]], [p["qps"]], marker="*", s=220, color=colour, edgecolor="black", zorder=5)
    ax.axvline(0.95, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@100 (vs exact inner product)")
    ax.set_ylabel("queries per second, one thread, batch size 1 (log)")
    hw = report["hardware"]
    data = report["data"]
    what = f"bundle {Path(data['bundle']).name}" if "bundle" in data else "synthetic"
    ax.set_title(
        f"{report['items']:,} × {report['dim']} ({what}), {report['queries']:,} queries — "
        f"{hw['cpu']}, 1 thread\n★ = backend default; up and right is better",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    lo = min(p["recall@100"] for p in report["points"])
    ax.set_xlim(max(0.0, min(lo, 0.85) - 0.02), 1.005)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ann_plot", description="Redraw a bench.ann report.")
    ap.add_argument("report", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument(
        "--remark-defaults",
        action="store_true",
        help="re-flag the points that are the current default_params and rewrite the report",
    )
    args = ap.parse_args(argv)
    report = json.loads(args.report.read_text())
    if args.remark_defaults:
        for note in remark_defaults(report):
            print(note)
        report["defaults_remarked"] = "default flags re-marked from the current default_params after this run"
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    if args.png:
        plot(report, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
