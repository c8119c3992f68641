"""The soak benchmark for seconds on the tiny fixture bundle: the report is well formed (every process and both
Redis instances sampled, a slope per series) and every request was answered.

Not a memory test (10 s says nothing about leaks; the 10-minute run's numbers are in docs/reliability.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.integration

SERIES = {
    "rss:gateway",
    "rss:embedding_store-0",
    "rss:candidate_generation-0",
    "rss:ranking-0",
    "rss:redis-store",
    "rss:redis-cache",
    "rss:load_generator",
    "redis:store",
    "redis:cache",
}


def test_soak_samples_every_process_and_both_redis_and_reports_slopes(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak"
    args = ["--duration", "10", "--rate", "15", "--visitors-per-s", "2", "--sample-every", "1", "--out", str(out)]
    assert soak.main([*args, "--models-dir", str(models_dir)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 0

    assert len(report["samples"]) >= 8
    assert report["samples"][-1].keys() >= SERIES
    assert all(report["samples"][-1][key] > 0 for key in SERIES)
    assert report["verdict"]["slope_mb_per_min"].keys() == SERIES
    assert report["verdict"]["flat"].keys() == SERIES - set(soak.GROWS_BY_DESIGN)  # the store grows by design
    assert 15 <= report["new_visitors"] <= 24
    assert report["requests"].keys() == {"/v1/events 200", "/v1/recommend 200"}, report["requests"]
    assert report["samples"][-1]["keys:store"] > report["samples"][0]["keys:store"]  # the new visitors are stored
