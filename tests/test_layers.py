"""The packages import only downwards, and no module imports itself back through others.

    recmesh   the ML library (data, train, index, rank, evaluate, bundles, publish, CLI): no serving code
    serving   the serving kit shared by the services and the gateway
    services  the three stage services; gateway  the front door (neither imports the other)
    devtools  the local stack runner, CPU limits, stub generation: above everything it runs

Every import counts, including those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recmesh", "serving", "services", "gateway", "devtools")
# What each package may import of the others (itself always).
ALLOWED = {
    "recmesh": set(),
    "serving": {"recmesh"},
    "services": {"recmesh", "serving"},
    "gateway": {"recmesh", "serving"},
    "devtools": {"recmesh", "serving", "services", "gateway"},
}
SERVING_LIBRARIES = ("grpc", "grpc_health", "grpc_reflection", "fastapi", "starlette", "uvicorn", "uvloop")
# The generated stubs: recmesh.v1 of the recmesh-client distribution (clients/python), not a directory here.
STUBS = "recmesh.v1"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports: internal ones resolved to a module of `known`, external ones by top name."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == STUBS or target.startswith(STUBS + "."):
                out.add(STUBS)
                continue
            while target not in known and "." in target and target.split(".")[0] in PACKAGES:
                target = target.rsplit(".", 1)[0]
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_packages_import_only_downwards() -> None:
    wrong = []
    for module, imported in _graph().items():
        package = module.split(".")[0]
        for target in imported:
            top = target.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_each_service_imports_no_other_service() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, imported in _graph().items()
        if module.startswith("services.")
        for target in imported
        if target.startswith("services.") and target.split(".")[1] != module.split(".")[1]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_ml_library_imports_no_serving_library() -> None:
    """recmesh/ trains, evaluates and publishes; gRPC and web frameworks belong to the layers above (the
    generated stubs, recmesh.v1 of the recmesh-client distribution, are the API's package, imported only by those
    layers)."""
    wrong = [
        f"{module} imports {target}"
        for module, imported in _graph().items()
        if module.startswith("recmesh.")
        for target in imported
        if target.split(".")[0] in SERVING_LIBRARIES or target == STUBS
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_loops() -> None:
    graph = _graph()
    internal = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # Tarjan's strongly connected components: a component of more than one module is a loop.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in internal[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(internal):
        if module not in index:
            visit(module)
    assert not loops, "import loops: " + "; ".join(" <-> ".join(c) for c in loops)


def test_the_walk_sees_real_imports() -> None:
    """Guard the guard: the walk finds known edges (a walk that found nothing would pass every test above)."""
    graph = _graph()
    assert "serving.errors" in graph["services.ranking.servicer"] or any(
        t.startswith("serving") for t in graph["services.ranking.server"]
    )
    assert "recmesh.pipeline" in graph["recmesh.registry"]
    assert "devtools.stack" in graph["devtools.up"]
    assert STUBS in graph["gateway.grpc_api"]
