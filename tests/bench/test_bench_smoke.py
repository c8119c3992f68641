"""The serving benchmark end to end, for seconds, on the tiny fixture bundle: the report is well formed and the
run served every request, undegraded.

Not a performance test (CI machines are shared): it checks keys, units, counts and outcomes, never a latency.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import serve
from bench.report import PERCENTAGES

pytestmark = pytest.mark.integration

GHZ_COUNTS = {"count", "rps", "statusCodeDistribution", "errorDistribution", "latencyDistribution"}
GHZ_DURATIONS_NS = {"total", "average", "fastest", "slowest"}
PROCESSES = {"gateway", "embedding_store-0", "candidate_generation-0", "ranking-0", "locust"}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sessions the `models_dir` bundle was trained on (same generator arguments as tests/conftest.py)."""
    from recmesh.data.synth import generate, write_user_lines

    path = tmp_path_factory.mktemp("bench") / "sessions.txt"
    write_user_lines(generate(n_items=2000, n_users=3000, seed=1), path)
    return path


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bench_writes_a_ghz_summary_csvs_and_a_plot(
    protocol: str, models_dir: Path, sessions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    args = f"--protocol {protocol} --rate 40 --duration 3 --warmup 0 --floor-requests 200".split()
    paths = ["--models-dir", models_dir, "--sessions", sessions, "--json", out, "--cache", tmp_path / "cache"]
    code = serve.main([*args, *map(str, paths)])
    assert code == 0
    report = json.loads(out.read_text())

    assert report.keys() >= GHZ_COUNTS | GHZ_DURATIONS_NS
    assert report["count"] > 0 and report["rps"] > 0
    assert report["total"] > 1e9  # nanoseconds: a 3 s run
    assert 0 < report["fastest"] <= report["average"] <= report["slowest"] < 10e9
    assert [row["percentage"] for row in report["latencyDistribution"]] == list(PERCENTAGES)
    assert sum(report["statusCodeDistribution"].values()) == report["count"]
    assert report["offered_rps"] == 40
    assert report["floor_us_per_request"] > 0
    assert {"embeddings", "candidates", "ranking", "total"} <= report["per_stage_ms"].keys()
    assert report["cpu_seconds_per_request"].keys() >= PROCESSES
    assert all(v >= 0 for v in report["cpu_seconds_per_request"].values())
    assert report["steps"][0]["offered_rps"] == 40
    # A run that "works" with every request failed or degraded must not pass: 40 req/s is far below any knee.
    assert report["errorDistribution"] == {}, report["errorDistribution"]
    assert set(report["statusCodeDistribution"]) == {"200" if protocol == "rest" else "OK"}
    assert sum(report["degraded"].values()) == 0, report["degraded"]

    assert out.with_suffix(".png").stat().st_size > 0
    stats = tmp_path / "bench-csv" / f"{protocol}-40_stats.csv"
    assert "recommend" in stats.read_text()
