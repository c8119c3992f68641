"""Chaos, short: steady low load while Redis and each stage are killed (-9) and brought back by the supervisor (as
`recmesh up` does), and a stage is stopped (SIGSTOP) for 3 s. No request fails, every acknowledged event is still
in Redis afterwards, /readyz answers 200 throughout. bench/chaos.py runs the same at 60 % of capacity.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.chaos import chaos
from devtools.stack import LocalStack

pytestmark = pytest.mark.integration


def test_crashes_and_a_stall_fail_no_request_and_lose_no_acknowledged_event(bundle_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundle_path, models / bundle_path.name)
    with LocalStack(models, log_dir=tmp_path / "logs") as stack:
        summary, _ = chaos(stack, rate=25.0, settle_s=1.5)
    where = f"{summary['faults']}; logs in {tmp_path / 'logs'}"
    assert [f["fault"] for f in summary["faults"]] == [
        "kill -9 redis store",
        "kill -9 embedding_store",
        "kill -9 candidate_generation",
        "kill -9 ranking",
        "SIGSTOP candidate_generation 3 s",
    ]
    assert summary["recommendations"] > 200 and summary["recommendations_failed"] == 0, where
    assert summary["event_calls_failed_otherwise"] == 0, where  # a 503 while Redis is down is retried
    assert summary["events_acknowledged"] > 50 and summary["events_lost"] == 0, where
    assert summary["readyz_polls"] > 50 and summary["readyz_not_200"] == 0, where
    # Degraded answers belong to the faults (in flight from a fault to 1 s after its part was back). A few strays
    # are tolerated here, where a shared CI machine may make a hop late; bench.chaos reports the exact count.
    stray = summary["degraded_outside_faults"]
    assert stray <= max(2, 0.01 * summary["recommendations"]), (stray, summary["degraded_outside_where"], where)
    assert sum("restarted" in line for line in summary["supervisor_log"]) == 4, summary["supervisor_log"]
