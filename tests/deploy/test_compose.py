"""docker-compose.yml: valid against the Compose Specification, and its env names, ports, addresses, commands,
health checks and start order agree with the code.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from tests.deploy.conftest import (
    COMPOSE_FILE,
    MODULES,
    SETTINGS,
    allowed_env,
    compose_env,
    compose_ports,
    load_compose,
    named_ports,
    port_env_defaults,
    split_address,
    upstreams,
)


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
