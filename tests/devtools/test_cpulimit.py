"""CPU limits for local replicas: a real cgroup quota on a real busy process (skipped where cgroups are read-only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from devtools import cpulimit
from devtools.up import parse_cpu_limits


def test_cpu_limit_specs_are_parsed_and_bad_ones_named():
    assert parse_cpu_limits(["ranking=0.5", "candidate-generation=2", "gateway=1"]) == {
        "ranking": 0.5,
        "candidate_generation": 2.0,
        "gateway": 1.0,
    }
    for bad in ("ranking", "ranking=0", "ranking=-1", "ranking=lots", "redis=1"):
        with pytest.raises(ValueError, match="--cpu-limit"):
            parse_cpu_limits([bad])


@pytest.mark.skipif(not cpulimit.available(), reason="no writable cgroup cpu controller here")
def test_a_limited_process_gets_no_more_than_its_quota():
    limit = cpulimit.CpuLimit.create(f"recmesh-test-{time.monotonic_ns()}", 0.2, period_us=10_000)
    # spins for 2 s of wall time: unlimited it would burn 2 CPU seconds
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 2\nwhile time.time() < end: pass"])
    limit.add(busy.pid)
    wall0 = time.monotonic()
    _, _, usage = os.wait4(busy.pid, 0)
    wall = time.monotonic() - wall0
    cpu = usage.ru_utime + usage.ru_stime
    assert limit.throttled()["throttled_periods"] > 0
    assert cpu < 0.2 * wall * 1.5 + 0.1, f"{cpu:.2f} CPU s in {wall:.2f} s under a 0.2-core limit"
    limit.remove()
    assert not limit.path.exists()


def test_recmesh_up_rejects_a_bad_limit_before_training_anything(tmp_path, capsys):
    from devtools.cli import main

    assert main(["up", "--models-dir", str(tmp_path / "models"), "--cpu-limit", "ranking=zero"]) != 0
    assert "--cpu-limit 'ranking=zero'" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()  # no demo bundle was trained first
