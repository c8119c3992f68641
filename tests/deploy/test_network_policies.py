"""NetworkPolicies, evaluated: which source may open which port on which pod, in every overlay."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy.conftest import (
    GRPC_SERVICES,
    NAMESPACE,
    OVERLAYS,
    named_ports,
    objects_of,
    rendered,
    selects,
    workloads,
)

OUTSIDE = "<outside>"  # a pod in another namespace, or a client from outside the cluster
PROMETHEUS = "<prometheus>"  # a pod labelled app.kubernetes.io/name: prometheus in namespace "monitoring"


def allowed_connections(objects: tuple[dict[str, Any], ...]) -> set[tuple[str, str, int]]:
    """(source, destination workload, port) for every combination the ingress NetworkPolicies allow."""
    found = workloads(objects)
    policies = list(objects_of(objects, "NetworkPolicy").values())
    sources: dict[str, tuple[str, dict[str, str]]] = {w.name: (w.namespace, w.labels) for w in found.values()}
    sources[OUTSIDE] = ("elsewhere", {})
    sources[PROMETHEUS] = ("monitoring", {"app.kubernetes.io/name": "prometheus"})

    def peer_matches(peer: dict[str, Any], policy_ns: str, src_ns: str, src_labels: dict[str, str]) -> bool:
        if "ipBlock" in peer:
            return src_ns in ("elsewhere",)
        ns_labels = {"kubernetes.io/metadata.name": src_ns}
        in_namespace = src_ns == policy_ns
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], ns_labels)
        return in_namespace and selects(peer.get("podSelector", {}), src_labels)

    allowed = set()
    for dest in found.values():
        ports = sorted({p["containerPort"] for c in dest.containers for p in c.get("ports", [])})
        selecting = [
            p
            for p in policies
            if p["metadata"]["namespace"] == dest.namespace
            and "Ingress" in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"], dest.labels)
        ]
        for source, (src_ns, src_labels) in sources.items():
            for port in ports:
                if not selecting:
                    allowed.add((source, dest.name, port))
                    continue
                for policy in selecting:
                    for rule in policy["spec"].get("ingress", []):
                        peers = rule.get("from")
                        peer_ok = not peers or any(
                            peer_matches(peer, policy["metadata"]["namespace"], src_ns, src_labels) for peer in peers
                        )
                        rule_ports = rule.get("ports")
                        port_ok = not rule_ports or any(dest.port(rp["port"]) == port for rp in rule_ports)
                        if peer_ok and port_ok:
                            allowed.add((source, dest.name, port))
    return allowed


def expected_connections(objects: tuple[dict[str, Any], ...]) -> set[tuple[str, str, int]]:
    found = workloads(objects)
    expected = set()
    for source in [*found, OUTSIDE, PROMETHEUS]:
        for port in named_ports("gateway").values():
            expected.add((source, "gateway", port))  # the entry point: anyone
    for process in GRPC_SERVICES:
        expected.add(("gateway", process, named_ports(process)["grpc"]))
        expected.add((PROMETHEUS, process, named_ports(process)["metrics"]))
    if "redis" in found:
        # The gateway too: it reads/writes visitors' events, the live catalogue and the version pointer; candidate
        # generation follows the live catalogue (see overlays/dev).
        for source in ("embedding-store", "candidate-generation", "gateway", "train-publish"):
            expected.add((source, "redis", 6379))
    if "redis-cache" in found:  # the vector cache: the embedding store and publish only
        for source in ("embedding-store", "train-publish"):
            expected.add((source, "redis-cache", 6379))
    return expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_intended_matrix(overlay: str) -> None:
    objects = rendered(overlay)
    assert allowed_connections(objects) == expected_connections(objects)


def test_network_policy_check_catches_an_open_door() -> None:
    objects = copy.deepcopy(rendered("dev"))
    objects = tuple(o for o in objects if o["metadata"]["name"] != "ranking-ingress") + (
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "ranking-ingress", "namespace": NAMESPACE, "labels": {}},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ranking"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": "grpc", "protocol": "TCP"}]}],  # `from` forgotten
            },
        },
    )
    extra = allowed_connections(objects) - expected_connections(objects)
    assert (OUTSIDE, "ranking", 50053) in extra
