"""The optional monitoring component (k8s/components/monitoring): prod with it enabled renders, its
ServiceMonitors have the shape prometheus-operator accepts and select Services that expose the scraped port, its
ConfigMap is a valid Kubernetes object Grafana's sidecar picks up, and the dashboard queries only metrics and
labels the code exports (serving/metrics.py), all of them documented in docs/metrics.md.
"""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from serving.metrics import Metrics
from tests.deploy.conftest import (
    K8S_VERSIONS,
    NAMESPACE,
    ROOT,
    kustomize_command,
    load_docs,
    mini_kustomize,
    real_kustomize,
    schema_errors,
)

COMPONENT = ROOT / "k8s/components/monitoring"
DASHBOARD = COMPONENT / "recmesh-dashboard.json"
METRICS_DOC = ROOT / "docs/metrics.md"
PROD = ROOT / "k8s/overlays/prod/kustomization.yaml"

# The part of the ServiceMonitor CRD (monitoring.coreos.com/v1) the component uses; anything else is refused, so
# a misspelt field fails here as it would be dropped (or refused) by the API server.
_STRING = {"type": "string", "minLength": 1}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": _STRING, "namespace": _STRING, "labels": {"type": "object"}},
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": _STRING,
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["key", "operator"],
                                "properties": {
                                    "key": _STRING,
                                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                    "values": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": _STRING,
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def monitored_prod(tmp_path: Path) -> list[dict[str, Any]]:
    """prod with the component enabled, as the comment in its kustomization.yaml says to (a copy of k8s/)."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    kustomization = tmp_path / "k8s/overlays/prod/kustomization.yaml"
    text = kustomization.read_text()
    enabled = text.replace(
        "# components:\n#   - ../../components/monitoring\n", "components:\n  - ../../components/monitoring\n"
    )
    assert enabled != text, "prod's kustomization.yaml no longer shows how to enable the component"
    kustomization.write_text(enabled)
    if kustomize_command() is not None:
        return real_kustomize(kustomization.parent)
    # The small renderer knows no components: prod, plus the component's objects as kustomize would add them.
    (tmp_path / "k8s/overlays/prod/kustomization.yaml").write_text(text)
    objects = mini_kustomize(kustomization.parent) + load_docs(COMPONENT / "service-monitors.yaml")
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "recmesh-grafana-dashboard",
                "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "recmesh"},
            },
            "data": {DASHBOARD.name: DASHBOARD.read_text()},
        }
    )
    for obj in objects:
        obj["metadata"]["namespace"] = NAMESPACE
    return objects


@pytest.fixture(scope="module")
def rendered_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return monitored_prod(tmp_path_factory.mktemp("monitored"))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        assert op in ("In", "NotIn"), f"operator {op} not evaluated here"
        if (labels.get(key) in values) != (op == "In"):
            return False
    return True


def test_prod_with_the_component_renders_and_its_kubernetes_objects_validate(rendered_objects) -> None:  # type: ignore[no-untyped-def]
    monitors = of_kind(rendered_objects, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["recmesh-gateway", "recmesh-stages"]
    (dashboard,) = [o for o in of_kind(rendered_objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]
    assert (
        dashboard["metadata"]["labels"]["grafana_dashboard"] == "1" and dashboard["metadata"]["namespace"] == NAMESPACE
    )
    assert json.loads(dashboard["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())
    core = [o for o in rendered_objects if o["kind"] != "ServiceMonitor"]  # a CRD: checked by its own schema below
    for version in K8S_VERSIONS:
        assert schema_errors(core, version) == []


def test_service_monitors_have_the_shape_prometheus_operator_accepts(rendered_objects) -> None:  # type: ignore[no-untyped-def]
    for monitor in of_kind(rendered_objects, "ServiceMonitor"):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    broken = json.loads(json.dumps(of_kind(rendered_objects, "ServiceMonitor")[0]))
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SERVICE_MONITOR_SCHEMA)


def test_every_recmesh_process_is_scraped_once_on_a_port_its_service_exposes(rendered_objects) -> None:  # type: ignore[no-untyped-def]
    scraped: list[str] = []
    for monitor in of_kind(rendered_objects, "ServiceMonitor"):
        ports = {e["port"] for e in monitor["spec"]["endpoints"]}
        for service in of_kind(rendered_objects, "Service"):
            exposed = {p["name"] for p in service["spec"]["ports"]}
            if selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})) and ports & exposed:
                scraped.append(service["metadata"]["labels"][monitor["spec"]["jobLabel"]])
    assert sorted(scraped) == ["candidate-generation", "embedding-store", "gateway", "ranking"]


# ------------------------------------------------------------------------------------ dashboard vs the code
@cache
def exported() -> dict[str, set[str]]:
    """Every sample name the code exports (histogram _bucket/_count/_sum, counter _total) -> its labels."""
    metrics = Metrics(CollectorRegistry())
    names: dict[str, set[str]] = {}
    for family in (metrics.http_duration, metrics.rpc_duration, metrics.degraded, metrics.embedding_lookups):
        labels = set(family._labelnames)
        for metric in family.describe():
            suffixes = ("_bucket", "_count", "_sum") if metric.type == "histogram" else ("_total",)
            for suffix in suffixes:
                names[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


SCRAPE_LABELS = {"job", "instance", "namespace", "pod"}  # what Prometheus (the operator) adds to every series


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_queries_only_metrics_and_labels_the_code_exports() -> None:
    assert len(queries()) >= 8
    for expr in queries():
        used = set(re.findall(r"\b([a-z_]+_(?:bucket|count|sum|total))\b", expr))
        assert used and used <= set(exported()), (expr, used - set(exported()))
        allowed = set().union(*(exported()[name] for name in used)) | SCRAPE_LABELS
        grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
        matched = set(re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)\s*\"", expr))
        assert grouped | matched <= allowed, (expr, (grouped | matched) - allowed)


def test_every_metric_family_and_label_is_documented() -> None:
    doc = METRICS_DOC.read_text()
    for name, labels in exported().items():
        family = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{family}" in doc, family
        for label in labels - {"le"}:
            assert f"`{label}`" in doc, (family, label)
