"""docs/configuration.md is what `python -m devtools.config_docs` generates from the settings classes, and covers
every process's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from devtools import config_docs
from serving.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_is_the_generated_one():
    committed = (ROOT / config_docs.OUTPUT).read_text()
    assert committed == config_docs.render(), "docs/configuration.md is stale: run `python -m devtools.config_docs`"


def test_check_mode_runs_as_a_command():
    result = subprocess.run(
        [sys.executable, "-m", "devtools.config_docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_settings_module_is_documented():
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for pattern in ("services/*/settings.py", "gateway/settings.py")
        for path in ROOT.glob(pattern)
    }
    assert modules == {process.settings.__module__ for process in config_docs.PROCESSES}


def test_every_variable_of_every_process_is_in_the_reference():
    text = config_docs.render()
    for process in config_docs.PROCESSES:
        assert f"## {process.name}\n" in text
        for field in process.settings.model_fields.values():
            assert f"| `{field.validation_alias}` |" in text
    assert (
        "| `RECMESH_MODELS_DIR` | `recmesh train --out`, `recmesh publish --models-dir`, "
        "`recmesh experiments start --models-dir` |" in text
    )


def test_a_setting_without_a_description_is_refused():
    class Undocumented(CommonSettings):
        shiny: int = Field(1, validation_alias="SHINY")

    with pytest.raises(config_docs.MissingDescription, match="Undocumented.shiny"):
        config_docs.table(Undocumented, ["shiny"])


def test_types_bounds_and_defaults_as_written_in_the_environment():
    from gateway.settings import Settings

    fields = Settings.model_fields
    assert config_docs.type_of(fields["batches_in_flight"]) == "int, >= 0, <= 64"
    assert config_docs.default_of(fields["stage_batching"]) == "`true`"
    assert config_docs.default_of(fields["model_version"]) == "empty"
    assert config_docs.default_of(fields["event_weights"]) == "`view=1,click=1.5,add_to_cart=2,purchase=3`"
