"""Regenerate (or check) the Python stubs of the recmesh protos.

    python -m devtools.protos           # protos/recmesh/v1/*.proto -> clients/python/src/recmesh/v1/*_pb2*.py(i)
    python -m devtools.protos --check   # exit 1 if the committed stubs differ from fresh ones

The stubs have one home, the recmesh-client distribution (``clients/python``, src layout), which the main
distribution depends on; ``recmesh`` is a namespace package in both. They are generated into
``clients/python/src`` with ``-Iprotos --python_out=... --pyi_out=... --grpc_python_out=...``, so the import path
matches the proto path (``from recmesh.v1 import common_pb2``) and no import rewriting is needed.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
STUB_ROOT = Path("clients") / "python" / "src"  # the client distribution's source root, relative to the repo
PACKAGE_DIR = Path("recmesh") / "v1"
STUB_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
INIT_TEXT = '"""Generated gRPC / protobuf stubs for recmesh.v1 (run `python -m devtools.protos`)."""\n'


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """All .proto files of the recmesh.v1 package, sorted."""
    return sorted((proto_root / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every proto into ``out_dir`` (a source root); return the stub paths written."""
    from grpc_tools import protoc  # imported lazily: heavy, and only needed here

    protos = proto_files(proto_root)
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root / PACKAGE_DIR}")
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    init = out_dir / PACKAGE_DIR / "__init__.py"
    init.write_text(INIT_TEXT)
    return sorted(stub_files(out_dir)) + [init]


def stub_files(root: Path) -> list[Path]:
    """The generated stub files present under ``root/recmesh/v1``."""
    pkg = root / PACKAGE_DIR
    return sorted(p for p in pkg.iterdir() if p.is_file() and p.name.endswith(STUB_SUFFIXES))


def check(repo_root: Path = REPO_ROOT) -> list[str]:
    """Generate into a temp dir and compare with the committed stubs; return the differences (empty = ok)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root, proto_root=repo_root / "protos")
        fresh = {p.name: p for p in stub_files(fresh_root)}
        fresh["__init__.py"] = fresh_root / PACKAGE_DIR / "__init__.py"
        committed_dir = repo_root / STUB_ROOT / PACKAGE_DIR
        committed = {p.name: p for p in stub_files(repo_root / STUB_ROOT)} if committed_dir.is_dir() else {}
        init = committed_dir / "__init__.py"
        if init.is_file():
            committed["__init__.py"] = init
        for name in sorted(fresh.keys() - committed.keys()):
            problems.append(f"missing: {STUB_ROOT / PACKAGE_DIR / name}")
        for name in sorted(committed.keys() - fresh.keys()):
            problems.append(f"stale (no proto generates it): {STUB_ROOT / PACKAGE_DIR / name}")
        for name in sorted(fresh.keys() & committed.keys()):
            if not filecmp.cmp(fresh[name], committed[name], shallow=False):
                problems.append(f"differs: {STUB_ROOT / PACKAGE_DIR / name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.protos", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if committed stubs are out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("stubs are out of date: run `python -m devtools.protos`", file=sys.stderr)
            return 1
        print("stubs are up to date")
        return 0
    written = generate(REPO_ROOT / STUB_ROOT)
    print(f"wrote {len(written)} files to {STUB_ROOT / PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
