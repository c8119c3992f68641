"""`python -m bench.ann`: nearest-neighbour search at batch size 1 — ScaNN vs FAISS vs hnswlib vs exact numpy.

Vectors come from a trained bundle (its index space, queried with real session vectors) or from a synthetic set
calibrated on such a bundle. Every library builds once and sweeps its speed/recall knobs; each point is scored
against exact search, then timed query by query on one thread in `--repeats` passes that go round all points of
all libraries in turn (medians reported). Builds may use every core; searches use one.

    python -m bench.ann --items 100000 --dim 64 --json docs/ann/synth-100k.json --png docs/ann/synth-100k.png
    python -m bench.ann --bundle /tmp/bm/<version> --json docs/ann/beauty.json --png docs/ann/beauty.png
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: the exact baseline must be single-threaded too

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from recmesh.index import AnnIndex  # noqa: E402
from recmesh.index.exact import ExactIndex  # noqa: E402

SESSIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "beauty.txt"
TIE = 1e-5  # an item scoring within this of the m-th true neighbour counts as found (ties, float rounding)


# ---------------------------------------------------------------- data


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def synthetic(
    n: int, dim: int, n_queries: int, seed: int = 0, spread: float = 1.5, zipf: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A mixture of round(sqrt(n)) Gaussian clusters with Zipf(`zipf`) sizes, unit-normalised.

    Cluster centres are random unit vectors; a point is centre + noise whose norm is about `spread` times the
    cluster's own spread factor (uniform in [0.5, 1.5]). spread=1.5 matches the difficulty of a trained beauty
    bundle's item-to-item search (local intrinsic dimensionality ~25, relative contrast ~1.38; see docs/ann.md).
    Queries are drawn from the same mixture and held out of the indexed set.
    """
    rng = np.random.default_rng(seed)
    clusters = max(1, int(round(math.sqrt(n))))
    weights = (np.arange(clusters) + 1.0) ** -zipf
    labels = rng.choice(clusters, n + n_queries, p=weights / weights.sum())
    centres = unit(rng.standard_normal((clusters, dim)))
    scale = (rng.uniform(0.5, 1.5, clusters) * spread / math.sqrt(dim)).astype(np.float32)
    out = np.empty((n + n_queries, dim), dtype=np.float32)
    for lo in range(0, n + n_queries, 200_000):  # in slices: 1M x 64 float64 noise would be 0.5 GB at once
        hi = min(lo + 200_000, n + n_queries)
        noise = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        out[lo:hi] = unit(centres[labels[lo:hi]] + noise * scale[labels[lo:hi], None])
    return out[:n], out[n:]


def from_bundle(path: Path, n_queries: int, sessions: Path | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The bundle's index space, queried with the session vectors serving computes (Model.query of a visitor's
    history: all but the last item of a sequence), or with held-out item vectors when there are no sessions."""
    from recmesh.pipeline import load_model

    model = load_model(path, verify=False)
    vectors = np.ascontiguousarray(model.space.context_vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if sessions is not None and sessions.exists():
        from recmesh.data.readers import read_sessions

        dataset = read_sessions(sessions)
        queries = []
        for u in rng.permutation(len(dataset.sequences)):
            rows, _ = model.recent_known(dataset.sequences[u][:-1])
            if rows.size:
                queries.append(model.query(rows))
            if len(queries) == n_queries:
                break
        return vectors, np.array(queries, dtype=np.float32), f"session vectors (Model.query) from {sessions.name}"
    rows = rng.choice(model.n_items, min(n_queries, model.n_items), replace=False)
    return vectors, np.ascontiguousarray(model.space.vectors[rows], dtype=np.float32), "item vectors (vectors.npy)"


def ground_truth(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    exact = ExactIndex(vectors)
    step = max(1, 25_000_000 // len(vectors))  # ~100 MB of scores per slice
    return np.vstack([exact.search_batch(queries[i : i + step], k) for i in range(0, len(queries), step)])


def difficulty(vectors: np.ndarray, queries: np.ndarray, k: int = 100, sample: int = 200) -> dict[str, float]:
    """Median local intrinsic dimensionality (MLE over the k nearest) and relative contrast (mean distance over
    the 10th nearest): higher LID and lower contrast make a set harder for every ANN method."""
    q = queries[:sample]
    top = ground_truth(vectors, q, k)
    lids, contrasts = [], []
    for i in range(len(q)):
        dots = vectors[top[i]] @ q[i]
        dist = np.sqrt(np.maximum(2.0 - 2.0 * dots, 1e-12))
        lids.append(-1.0 / np.mean(np.log(dist[:-1] / dist[-1])))
        rows = np.random.default_rng(i).choice(len(vectors), min(len(vectors), 5000), replace=False)
        mean = float(np.mean(np.sqrt(np.maximum(2.0 - 2.0 * (vectors[rows] @ q[i]), 0.0))))
        contrasts.append(mean / float(dist[9]))
    return {"lid@100": round(float(np.median(lids)), 1), "relative_contrast@10": round(float(np.median(contrasts)), 3)}


# ---------------------------------------------------------------- libraries


@dataclass
class Library:
    """One build of one library and the knob settings to sweep on it; `default` marks the backend's defaults."""

    name: str
    build: Callable[[np.ndarray], AnnIndex]
    build_params: dict[str, Any]
    knobs: list[dict[str, Any]]
    apply: Callable[[AnnIndex, dict[str, Any]], None]
    default: dict[str, Any] | None = None
    queries: int | None = None  # measure on the first n queries only (exact search at 1M is slow)
    extra: dict[str, Any] = field(default_factory=dict)


def _geometric(lo: float, hi: float, count: int) -> list[int]:
    return sorted({max(1, int(round(v))) for v in np.geomspace(lo, hi, count)})


def libraries(n: int, dim: int, k: int, names: list[str], build_threads: int) -> list[Library]:
    from recmesh.index import default_params

    libs: list[Library] = []
    if "exact" in names:
        libs.append(
            Library(
                "exact (numpy)",
                lambda x: ExactIndex(x),
                {},
                [{}],
                lambda i, p: None,
                default={},
                queries=200 if n > 200_000 else None,
            )
        )
    if "scann" in names:
        from recmesh.index.scann_index import ScannIndex, tree_params

        def scann_apply(index: AnnIndex, p: dict[str, Any]) -> None:
            assert isinstance(index, ScannIndex)
            index.set_search(p["leaves_to_search"], p["reorder"])

        tree = tree_params(n, k=200)
        leaves = tree["num_leaves"]
        knobs = [
            {"leaves_to_search": lv, "reorder": r}
            for lv in _geometric(max(1, leaves * 0.02), leaves * 0.7, 9)
            for r in (400, 800, 1500, 3000)
        ]
        defaults = default_params("scann", n)
        tree_default = {"leaves_to_search": tree["num_leaves_to_search"], "reorder": tree["reorder"]}
        if tree_default not in knobs:
            knobs.append(tree_default)
        libs.append(
            Library(
                "scann",
                lambda x: ScannIndex.build(x, tree),
                tree,
                knobs,
                scann_apply,
                default=tree_default if defaults["mode"] == "tree_ah" else None,
            )
        )
        if n <= 200_000:
            bf = {"mode": "brute_force", "k": 200}
            libs.append(
                Library(
                    "scann brute force",
                    lambda x: ScannIndex.build(x, bf),
                    bf,
                    [{}],
                    lambda i, p: None,
                    default={} if defaults["mode"] == "brute_force" else None,
                )
            )
    if "faiss_hnsw" in names or "hnswlib" in names:
        efs = [100, 128, 160, 192, 256, 320, 384, 512, 768, 1024]
    if "faiss_hnsw" in names:
        from recmesh.index.faiss_index import FaissHnswIndex

        hp = default_params("faiss_hnsw", n)

        def faiss_hnsw_apply(index: AnnIndex, p: dict[str, Any]) -> None:
            assert isinstance(index, FaissHnswIndex)
            index.set_ef(p["ef_search"])

        knobs = [{"ef_search": e} for e in sorted({*efs, hp["ef_search"]})]
        libs.append(
            Library(
                "faiss hnsw",
                lambda x: _faiss_build(FaissHnswIndex, x, hp, build_threads),
                hp,
                knobs,
                faiss_hnsw_apply,
                default={"ef_search": hp["ef_search"]},
            )
        )
    if "hnswlib" in names:
        from recmesh.index.hnsw_index import HnswlibIndex

        lp = default_params("hnswlib", n)

        def hnswlib_apply(index: AnnIndex, p: dict[str, Any]) -> None:
            assert isinstance(index, HnswlibIndex)
            index.set_ef(p["ef"])

        knobs = [{"ef": e} for e in sorted({*efs, lp["ef"]})]
        libs.append(
            Library(
                "hnswlib",
                lambda x: HnswlibIndex.build(x, lp, threads=build_threads),
                lp,
                knobs,
                hnswlib_apply,
                default={"ef": lp["ef"]},
            )
        )
    if "faiss_ivf" in names:
        from recmesh.index.faiss_index import FaissIvfIndex

        def ivf_apply(index: AnnIndex, p: dict[str, Any]) -> None:
            assert isinstance(index, FaissIvfIndex)
            index.set_probes(p["nprobe"], p.get("k_factor", 1))

        ip = default_params("faiss_ivf", n)
        nlist = ip["nlist"]
        knobs = [{"nprobe": p} for p in sorted({*_geometric(max(1, nlist * 0.005), nlist * 0.5, 11), ip["nprobe"]})]
        libs.append(
            Library(
                "faiss ivf-flat",
                lambda x: _faiss_build(FaissIvfIndex, x, ip, build_threads),
                ip,
                knobs,
                ivf_apply,
                default={"nprobe": ip["nprobe"]},
            )
        )
        pq = {**ip, "codec": f"PQ{max(1, dim // 2)}x4fs"}  # 4 bits per 2 dims: ScaNN's AH code size
        knobs = [
            {"nprobe": p, "k_factor": f} for p in _geometric(max(1, nlist * 0.005), nlist * 0.3, 8) for f in (4, 8, 16)
        ]
        libs.append(
            Library(
                "faiss ivf-pq4fs+refine",
                lambda x: _faiss_build(FaissIvfIndex, x, pq, build_threads),
                pq,
                knobs,
                ivf_apply,
            )
        )
    return libs


def _faiss_build(cls: Any, vectors: np.ndarray, params: dict[str, Any], threads: int) -> AnnIndex:
    import faiss

    from recmesh.index.faiss_index import single_thread

    faiss.omp_set_num_threads(threads)
    try:
        return cls.build(vectors, params)  # type: ignore[no-any-return]
    finally:
        single_thread()


# ---------------------------------------------------------------- measurement


def disk_mb(index: AnnIndex, vectors: np.ndarray) -> float:
    """Size of what `save` writes (what loading maps into memory); the exact index is the vectors themselves."""
    if isinstance(index, ExactIndex):
        return vectors.nbytes / 2**20
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
        index.save(Path(tmp) / "index")
        return sum(f.stat().st_size for f in (Path(tmp) / "index").rglob("*") if f.is_file()) / 2**20


def recall(index: AnnIndex, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """recall@m counts a returned item as found when it scores at least the m-th true neighbour's score (less TIE):
    duplicate vectors (rare items sharing a borrowed vector) tie, and any of them is a right answer
    (ann-benchmarks counts the same way, with 1e-3 on distances). id_recall@100 is the plain id overlap."""
    ats = (10, min(100, k))
    kth = {at: np.einsum("ij,ij->i", vectors[truth[:, at - 1]], queries) - TIE for at in ats}
    hits = dict.fromkeys(ats, 0)
    id_hits = 0
    for i, q in enumerate(queries):
        ids, _ = index.search(q, k)
        exact = vectors[ids[: ats[1]]] @ q
        for at in ats:
            hits[at] += min(at, int((exact[:at] >= kth[at][i]).sum()))
        id_hits += int(np.isin(ids[: ats[1]], truth[i, : ats[1]]).sum())
    return {
        "recall@10": round(hits[10] / (10 * len(queries)), 4),
        "recall@100": round(hits[ats[1]] / (ats[1] * len(queries)), 4),
        "id_recall@100": round(id_hits / (ats[1] * len(queries)), 4),
    }


def timed_pass(index: AnnIndex, queries: np.ndarray, k: int, warmup: int = 50) -> tuple[float, float, float]:
    """(p50, p99, mean) in ns of single calls over all queries, after a few untimed ones."""
    for q in queries[:warmup]:
        index.search(q, k)
    lat = np.empty(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        index.search(q, k)
        lat[i] = time.perf_counter_ns() - t0
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.mean())


@dataclass
class Built:
    lib: Library
    index: AnnIndex
    build_s: float
    memory_mb: float
    rss_mb: float
    points: list[dict[str, Any]] = field(default_factory=list)
    passes: list[list[tuple[float, float, float]]] = field(default_factory=list)


def run(
    libs: list[Library], vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, repeats: int
) -> list[dict[str, Any]]:
    """Build every library and score its sweep, then time `repeats` passes over all points of all libraries in
    turn: a burst of load from other processes then spoils one pass of many points, which the median over passes
    drops, instead of every pass of a few points."""
    built: list[Built] = []
    for lib in tqdm(libs, desc="build + recall", unit="lib", file=sys.stderr):
        tqdm.write(f"building {lib.name} {lib.build_params}", file=sys.stderr)
        rss = rss_bytes()
        t0 = time.perf_counter()
        index = lib.build(vectors)
        build_s = time.perf_counter() - t0
        rss_mb = (rss_bytes() - rss) / 2**20
        b = Built(lib, index, build_s, disk_mb(index, vectors), rss_mb)
        tqdm.write(f"  built in {build_s:.1f}s, {b.memory_mb:.0f} MB on disk, RSS +{rss_mb:.0f} MB", file=sys.stderr)
        nq = lib.queries or len(queries)
        for knob in lib.knobs:
            lib.apply(index, knob)
            params = {**lib.build_params, **knob}
            if "leaves_to_search" in knob:
                params.pop("num_leaves_to_search", None)  # the build's default, overridden by the knob
            b.points.append(
                {"library": lib.name, "params": params, **recall(index, vectors, queries[:nq], truth[:nq], k)}
            )
            b.passes.append([])
        built.append(b)
    total = sum(len(b.lib.knobs) for b in built) * repeats
    with tqdm(total=total, desc="timed passes", unit="point", file=sys.stderr) as bar:
        for _ in range(repeats):
            for b in built:
                nq = b.lib.queries or len(queries)
                for j, knob in enumerate(b.lib.knobs):
                    b.lib.apply(b.index, knob)
                    b.passes[j].append(timed_pass(b.index, queries[:nq], k))
                    bar.update()
    points = []
    for b in built:
        nq = b.lib.queries or len(queries)
        for knob, point, passes in zip(b.lib.knobs, b.points, b.passes, strict=True):
            p50, p99, mean = (float(np.median([p[i] for p in passes])) for i in range(3))
            point.update(
                {
                    "p50_ms": round(p50 / 1e6, 4),
                    "p99_ms": round(p99 / 1e6, 4),
                    "qps": round(1e9 / mean, 1),
                    "build_s": round(b.build_s, 2),
                    "memory_mb": round(b.memory_mb, 1),
                    "build_rss_mb": round(b.rss_mb, 1),
                    "queries": nq,
                    "default": knob == b.lib.default,
                }
            )
            print(
                f"{b.lib.name:24s} {json.dumps(knob):40s} recall@10 {point['recall@10']:.3f} recall@100 "
                f"{point['recall@100']:.3f} p50 {point['p50_ms']:.3f} ms p99 {point['p99_ms']:.3f} ms "
                f"{point['qps']:,.0f} qps",
                file=sys.stderr,
            )
            points.append(point)
    return points


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the peak, which only grows)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hardware() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("numpy", "scann", "faiss-cpu", "hnswlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ann", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size (ignored with --bundle)")
    ap.add_argument("--dim", type=int, default=64, help="synthetic dimension (ignored with --bundle)")
    ap.add_argument("--bundle", type=Path, help="a trained bundle: index its context_vectors.npy")
    ap.add_argument(
        "--sessions",
        type=Path,
        default=SESSIONS,
        help="sessions whose histories become queries for --bundle (default: shared beauty.txt)",
    )
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100, help="neighbours asked per query (recall@100 needs >= 100)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over every point; medians reported")
    ap.add_argument("--libraries", default="exact,scann,faiss_hnsw,hnswlib,faiss_ivf")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--spread", type=float, default=1.5, help="synthetic within-cluster noise (difficulty)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)

    started = time.perf_counter()
    load_before = os.getloadavg()
    if args.bundle:
        vectors, queries, query_kind = from_bundle(args.bundle, args.queries, args.sessions, args.seed)
        source: dict[str, Any] = {"bundle": str(args.bundle), "queries": query_kind}
    else:
        vectors, queries = synthetic(args.items, args.dim, args.queries, args.seed, args.spread)
        source = {
            "synthetic": f"{round(math.sqrt(args.items))} Gaussian clusters, Zipf sizes, spread {args.spread}",
            "queries": "held-out draws from the same mixture",
        }
    n, dim = vectors.shape
    print(f"{n:,} x {dim} vectors, {len(queries):,} queries ({source['queries']})", file=sys.stderr)
    t0 = time.perf_counter()
    truth = ground_truth(vectors, queries, args.k)
    source.update(difficulty(vectors, queries))
    print(f"exact top-{args.k}: {time.perf_counter() - t0:.1f}s; difficulty {source}", file=sys.stderr)

    names = [s.strip() for s in args.libraries.split(",") if s.strip()]
    points = run(libraries(n, dim, args.k, names, args.build_threads), vectors, queries, truth, args.k, args.repeats)
    default = next((p for p in points if p["default"] and p["library"].startswith("scann")), None)
    report = {
        "hardware": {
            **hardware(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "items": n,
        "dim": dim,
        "queries": len(queries),
        "k": args.k,
        "repeats": args.repeats,
        "build_threads": args.build_threads,
        "search_threads": 1,
        "data": source,
        "command": "python -m bench.ann " + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": round(time.perf_counter() - started, 1),
        "points": points,
        "default": default,
        "defaults": {p["library"]: p for p in points if p["default"]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    from bench.ann_plot import plot, table

    print(table(report), file=sys.stderr)
    if args.png:
        plot(report, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
