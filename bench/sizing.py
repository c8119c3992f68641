"""Replicas per service for a target load, from measured CPU per request and the prod manifests' sizing.

A replica of a service is one Python process computing on one event-loop thread. The HPA adds pods when their
average CPU passes `averageUtilization` % of the pod's CPU request, so one pod carries

    request_cores x target / cpu_seconds_per_request     requests per second

and a load of Q needs ceil(Q / that) pods. The CPU request comes from k8s/overlays/prod (patches/resources.yaml),
the target from the HPAs in k8s/base; the CPU per request is what `python -m bench.scaling` measured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "embedding-store", "candidate-generation", "ranking")
REDIS_CORE_TARGET = 0.7  # Redis executes commands on one thread: plan for 70 % of one core per instance


def cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def manifest_sizing(root: Path = ROOT) -> dict[str, dict[str, float]]:
    """Per service: the prod CPU request (cores), the HPA target (fraction) and the prod replica bounds."""
    requests = {}
    for doc in yaml.safe_load_all((root / "k8s/overlays/prod/patches/resources.yaml").read_text()):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        requests[doc["metadata"]["name"]] = cores(container["resources"]["requests"]["cpu"])
    bounds = {
        doc["metadata"]["name"]: (doc["spec"]["minReplicas"], doc["spec"]["maxReplicas"])
        for doc in yaml.safe_load_all((root / "k8s/overlays/prod/patches/replicas.yaml").read_text())
    }
    out = {}
    for service in SERVICES:
        (hpa,) = [
            d
            for d in yaml.safe_load_all((root / f"k8s/base/{service}.yaml").read_text())
            if d and d["kind"] == "HorizontalPodAutoscaler"
        ]
        (metric,) = hpa["spec"]["metrics"]
        out[service] = {
            "cpu_request_cores": requests[service],
            "hpa_target": metric["resource"]["target"]["averageUtilization"] / 100,
            "prod_min_replicas": bounds[service][0],
            "prod_max_replicas": bounds[service][1],
        }
    return out


def replicas_for(
    cpu_per_request: dict[str, float], loads: tuple[int, ...] = (1_000, 10_000, 100_000), root: Path = ROOT
) -> dict[str, Any]:
    """`cpu_per_request`: CPU seconds per request of each process as bench.serve names them (gateway,
    embedding_store-0, ..., redis)."""
    plan: dict[str, Any] = {}
    for service, sizing in manifest_sizing(root).items():
        cpu = cpu_per_request["gateway" if service == "gateway" else service.replace("-", "_") + "-0"]
        per_pod = sizing["cpu_request_cores"] * sizing["hpa_target"] / cpu
        plan[service] = {
            **sizing,
            "cpu_ms_per_request": round(cpu * 1000, 3),
            "rps_per_pod_at_target": round(per_pod),
            "pods": {str(q): max(1, math.ceil(q / per_pod)) for q in loads},
        }
    redis_cpu = cpu_per_request["redis"]
    plan["redis"] = {
        "cpu_ms_per_request": round(redis_cpu * 1000, 4),
        "rps_per_instance_at_70pct_of_a_core": round(REDIS_CORE_TARGET / redis_cpu),
        "instances": {str(q): max(1, math.ceil(q * redis_cpu / REDIS_CORE_TARGET)) for q in loads},
    }
    plan["total_cores_requested"] = {
        str(q): round(sum(plan[s]["pods"][str(q)] * plan[s]["cpu_request_cores"] for s in SERVICES), 1) for q in loads
    }
    return plan
