"""Sizing: each serving Deployment autoscales on a CPU target it can reach, has a disruption budget, and prod
raises replicas and resources over base.
"""

from __future__ import annotations

import pytest

from bench.sizing import cores
from tests.deploy.conftest import OVERLAYS, SETTINGS, objects_of, rendered, selects, workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_serving_deployments_autoscale_on_cpu_with_disruption_budgets(overlay: str) -> None:
    objects = rendered(overlay)
    found = workloads(objects)
    hpas, pdbs = objects_of(objects, "HorizontalPodAutoscaler"), objects_of(objects, "PodDisruptionBudget")
    for process in SETTINGS:
        workload = found[process]
        deployment = objects_of(objects, "Deployment")[process]
        (container,) = workload.containers
        # CPU-based autoscaling and a disruption budget.
        hpa = hpas[process]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": process}
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        # Each service is one Python process computing on one event-loop thread (~1 core of useful work): the
        # HPA's target share of the CPU request must be reachable, or the stage would never scale out.
        (target,) = [m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]]
        request = cores(container["resources"]["requests"]["cpu"])
        assert request * target / 100 <= 0.9, f"{overlay} {process}: {target}% of {request} CPU is out of reach"
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        assert pdbs[process]["apiVersion"] == "policy/v1"
        assert selects(pdbs[process]["spec"]["selector"], workload.labels)


def test_prod_raises_replicas_and_resources_over_base() -> None:
    base, prod = rendered("base"), rendered("prod")
    for process in SETTINGS:
        b = objects_of(base, "HorizontalPodAutoscaler")[process]
        p = objects_of(prod, "HorizontalPodAutoscaler")[process]
        assert p["spec"]["minReplicas"] > b["spec"]["minReplicas"]
        assert p["spec"]["maxReplicas"] > b["spec"]["maxReplicas"]
        b_res = workloads(base)[process].containers[0]["resources"]
        p_res = workloads(prod)[process].containers[0]["resources"]
        assert p_res != b_res
