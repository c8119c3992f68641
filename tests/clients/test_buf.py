"""The protos pass `buf lint` (protos/buf.yaml: STANDARD, two explained exceptions), and `buf breaking` (FILE), the
CI gate of `make buf`, does catch a renumbered field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import ROOT

BUF = ROOT / "clients" / "node" / "node_modules" / ".bin" / "buf"
PROTOS = ROOT / "protos"


@pytest.fixture(scope="module")
def buf() -> str:
    if not BUF.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm not installed: buf comes from clients/node (npm ci)")
        pytest.fail("buf missing: run `make node-install` (npm ci in clients/node)")
    return str(BUF)


def test_protos_pass_buf_lint(buf: str) -> None:
    ran = subprocess.run([buf, "lint", str(PROTOS)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_buf_breaking_catches_a_renumbered_field(buf: str, tmp_path: Path) -> None:
    changed = tmp_path / "protos"
    shutil.copytree(PROTOS, changed)
    common = changed / "recmesh" / "v1" / "common.proto"
    text = common.read_text()
    assert "  string item_id = 1;\n" in text
    common.write_text(text.replace("  string item_id = 1;\n", "  string item_id = 7;\n", 1))

    same = subprocess.run([buf, "breaking", str(PROTOS), "--against", str(PROTOS)], capture_output=True, timeout=120)
    assert same.returncode == 0, same.stdout
    broken = subprocess.run(
        [buf, "breaking", str(changed), "--against", str(PROTOS)], capture_output=True, text=True, timeout=120
    )
    assert broken.returncode != 0 and "ItemScore" in broken.stdout, broken.stdout + broken.stderr
