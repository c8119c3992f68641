"""The sizing guide's arithmetic, on the real prod manifests (bench/sizing.py)."""

from __future__ import annotations

import math

from bench.sizing import SERVICES, manifest_sizing, replicas_for

MEASURED = {  # CPU seconds per request, as bench.scaling names the processes
    "gateway": 0.0016,
    "embedding_store-0": 0.0006,
    "candidate_generation-0": 0.0009,
    "ranking-0": 0.001,
    "redis": 0.00005,
}


def test_manifest_sizing_reads_requests_targets_and_bounds_of_every_service():
    sizing = manifest_sizing()
    assert set(sizing) == set(SERVICES)
    for service, s in sizing.items():
        assert 0 < s["cpu_request_cores"] * s["hpa_target"] <= 0.9, service  # reachable by one Python process
        assert 1 <= s["prod_min_replicas"] < s["prod_max_replicas"], service


def test_pods_are_the_load_over_what_one_pod_carries_at_its_target_rounded_up():
    plan = replicas_for(MEASURED, loads=(1_000, 10_000))
    for service in SERVICES:
        s = plan[service]
        cpu = MEASURED["gateway" if service == "gateway" else service.replace("-", "_") + "-0"]
        per_pod = s["cpu_request_cores"] * s["hpa_target"] / cpu
        assert s["pods"] == {"1000": math.ceil(1000 / per_pod), "10000": math.ceil(10_000 / per_pod)}
    # Ten times the load, about ten times the pods; the ranking stage at 1 ms and 60 % of one core: 600/s a pod.
    assert plan["ranking"]["rps_per_pod_at_target"] == 600
    assert plan["redis"]["instances"] == {"1000": 1, "10000": 1}
