"""`pip install .` (the serving image) carries what serving needs; training, the other ANN backends and the plots are
extras, and a command or bundle that needs a missing one says so in one line. The libraries are made unimportable
in a child process (sys.modules[name] = None): this venv has every extra installed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.deploy.conftest import ROOT

EXTRA_LIBRARIES = {"gensim", "faiss-cpu", "hnswlib", "matplotlib", "grpcio-tools"}


def run_without(modules: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = f"import sys; sys.modules.update(dict.fromkeys({modules!r}))\n{code}"
    return subprocess.run([sys.executable, "-I", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_serving_install_carries_no_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("=")[0].split("[")[0].split("<")[0].strip() for r in project["dependencies"]}
    assert not names & EXTRA_LIBRARIES
    assert {"gensim"} <= {r.split(">")[0] for r in project["optional-dependencies"]["train"]}


def test_a_bundle_index_whose_library_is_missing_names_the_extra(tmp_path: Path) -> None:
    code = (
        "from recmesh.index import backend_class\n"
        "for backend in ('faiss_hnsw', 'hnswlib'):\n"
        "    try:\n"
        "        backend_class(backend)\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
        "print(backend_class('exact').__name__)\n"
    )
    ran = run_without(["faiss", "hnswlib"], code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "the 'faiss_hnsw' index backend needs faiss, which is not installed here: pip install 'recmesh[ann]'",
        "the 'hnswlib' index backend needs hnswlib, which is not installed here: pip install 'recmesh[ann]'",
        "ExactIndex",
    ]


def test_recmesh_train_without_gensim_is_one_line(tmp_path: Path) -> None:
    code = f"from devtools.cli import main\nraise SystemExit(main(['train', '--out', {str(tmp_path / 'm')!r}]))"
    ran = run_without(["gensim"], code, tmp_path)
    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert last == (
        "recmesh train: error: training (recmesh train) needs gensim, which is not installed here: "
        "pip install 'recmesh[train]'"
    )
    assert "Traceback" not in ran.stderr
