"""Kubernetes manifests vs. the code: env names, ports and addresses against the settings classes; pods locked
down; probes, Services and the bundle volume of every serving Deployment; the train-publish Job.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.conftest import (
    GRPC_SERVICES,
    MODULES,
    NAMESPACE,
    OVERLAYS,
    SETTINGS,
    allowed_env,
    container_env,
    named_ports,
    objects_of,
    port_env_defaults,
    rendered,
    selects,
    split_address,
    upstreams,
    workloads,
)


def test_settings_cover_every_process() -> None:
    assert set(upstreams().values()) == set(GRPC_SERVICES)
    assert set(SETTINGS) == set(GRPC_SERVICES) | {"gateway"}
    for process in SETTINGS:
        assert set(port_env_defaults(process).values()) == set(named_ports(process).values())


def k8s_problems(objects: tuple[dict[str, Any], ...]) -> list[str]:
    """Env names, ports and upstream addresses of every recmesh container vs. the settings classes."""
    problems = []
    found = workloads(objects)
    services = objects_of(objects, "Service")
    for workload in found.values():
        for container in workload.containers:
            process = container["name"]
            env = container_env(objects, container)
            if process == "redis":
                continue
            unknown = set(env) - allowed_env(process)
            if unknown:
                problems.append(f"{process}: variables no settings field reads: {sorted(unknown)}")
            if process not in SETTINGS:
                continue
            if container.get("command") != ["python", "-m", MODULES[process]]:
                problems.append(f"{process}: command {container.get('command')}")
            for alias, default in port_env_defaults(process).items():
                if env.get(alias, str(default)) != str(default):
                    problems.append(f"{process}: {alias}={env[alias]}, settings default {default}")
            declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if declared != named_ports(process):
                problems.append(f"{process}: container ports {declared} != settings {named_ports(process)}")
            if process != "gateway":
                continue
            for alias, target in upstreams().items():
                host, port = split_address(env.get(alias, ""))
                service = services.get(host)
                if service is None:
                    problems.append(f"gateway {alias}: no Service {host}")
                    continue
                if service["spec"].get("clusterIP") != "None":
                    problems.append(f"gateway {alias}: Service {host} is not headless (clusterIP: None)")
                service_ports = {p["port"]: p.get("targetPort", p["port"]) for p in service["spec"]["ports"]}
                backends = [
                    w for w in found.values() if selects({"matchLabels": service["spec"]["selector"]}, w.labels)
                ]
                if port not in service_ports:
                    problems.append(f"gateway {alias}: Service {host} does not expose {port}")
                elif [w.name for w in backends] != [target]:
                    problems.append(f"gateway {alias}: Service {host} selects {[w.name for w in backends]}")
                elif backends[0].port(service_ports[port]) != port:
                    problems.append(f"gateway {alias}: {target} does not listen on {port}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_env_ports_and_addresses_match_settings(overlay: str) -> None:
    objects = rendered(overlay)
    assert set(SETTINGS) <= set(workloads(objects))
    assert k8s_problems(objects) == []


def test_k8s_cross_check_catches_a_wrong_name_port_or_address() -> None:
    objects = copy.deepcopy(rendered("dev"))
    deployments = objects_of(objects, "Deployment")
    ranking = deployments["ranking"]["spec"]["template"]["spec"]["containers"][0]
    ranking["env"].append({"name": "RANKING_PORT", "value": "1"})
    ranking["ports"][0]["containerPort"] = 50054
    gateway = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]
    for var in gateway["env"]:
        if var["name"] == "CANDIDATE_GENERATION_ADDR":
            var["value"] = "dns:///candidate-generation:50052"  # the ClusterIP Service, not the headless one
    problems = "\n".join(k8s_problems(objects))
    assert "RANKING_PORT" in problems
    assert "50054" in problems
    assert "candidate-generation is not headless" in problems


def test_k8s_redis_url_points_at_the_in_cluster_redis_in_dev_and_elsewhere_in_prod() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    url = urlsplit(objects_of(dev, "ConfigMap")["recmesh-redis"]["data"]["REDIS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    redis_service = objects_of(dev, "Service")["redis"]
    assert selects({"matchLabels": redis_service["spec"]["selector"]}, workloads(dev)["redis"].labels)
    assert workloads(dev)["redis"].port(redis_service["spec"]["ports"][0]["targetPort"]) == 6379
    assert "redis" not in workloads(prod) and "redis" not in workloads(rendered("base"))
    assert urlsplit(objects_of(prod, "ConfigMap")["recmesh-redis"]["data"]["REDIS_URL"]).hostname != "redis"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_pods_are_locked_down_and_sized(overlay: str) -> None:
    objects = rendered(overlay)
    accounts = objects_of(objects, "ServiceAccount")
    for workload in workloads(objects).values():
        pod, where = workload.pod, workload.name
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["serviceAccountName"] in accounts, where
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, where
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in container["volumeMounts"])
            assert re.fullmatch(r"[a-z0-9.-]+:[0-9][\w.-]*", container["image"]), f"{where}: unpinned image"
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "recmesh", name
        assert obj["metadata"].get("namespace") == (None if obj["kind"] == "Namespace" else NAMESPACE), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_serving_deployments_have_probes_services_and_the_bundle(overlay: str) -> None:
    objects = rendered(overlay)
    found = workloads(objects)
    services, pvcs = objects_of(objects, "Service"), objects_of(objects, "PersistentVolumeClaim")
    for process in SETTINGS:
        workload = found[process]
        assert workload.kind == "Deployment"
        deployment = objects_of(objects, "Deployment")[process]
        assert selects(deployment["spec"]["selector"], workload.labels)
        assert workload.labels["app.kubernetes.io/name"] == process
        (container,) = workload.containers
        ports = named_ports(process)
        if process == "gateway":
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        else:
            # Under mutual TLS the kubelet's (plaintext) gRPC probes ask the health-only HEALTH_PORT.
            probed = int(container_env(objects, container).get("HEALTH_PORT") or ports["grpc"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": probed}, (process, probe)
        # SIGTERM comes after preStop; the server then drains with a 5 s grace: all inside the pod's grace.
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
        assert workload.pod["terminationGracePeriodSeconds"] >= 30
        # The bundle volume, read-only.
        (models,) = [v for v in workload.pod["volumes"] if "persistentVolumeClaim" in v]
        assert models["persistentVolumeClaim"] == {"claimName": "recmesh-models", "readOnly": True}
        assert models["persistentVolumeClaim"]["claimName"] in pvcs
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == models["name"]]
        assert mount == {"name": models["name"], "mountPath": "/models", "readOnly": True}
        # The Service with ports named as in the pod, and for the gRPC stages the headless twin.
        service = services[process]
        assert selects({"matchLabels": service["spec"]["selector"]}, workload.labels)
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
        assert all(workload.port(p["targetPort"]) == p["port"] for p in service["spec"]["ports"])
        if process in GRPC_SERVICES:
            headless = services[f"{process}-headless"]["spec"]
            assert headless["clusterIP"] == "None"
            assert [(p["name"], p["port"]) for p in headless["ports"]] == [("grpc", ports["grpc"])]
            assert selects({"matchLabels": headless["selector"]}, workload.labels)
    # The Job writes bundles into the same claim, read-write, and publishes to Redis.
    job = found["train-publish"]
    (models,) = [v for v in job.pod["volumes"] if "persistentVolumeClaim" in v]
    assert models["persistentVolumeClaim"] == {"claimName": "recmesh-models"}
    script = job.containers[0]["command"][-1]
    assert "recmesh train --out /models" in script
    assert 'recmesh publish --models-dir /models --redis-url "$REDIS_URL"' in script
