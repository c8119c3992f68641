"""The console script's own part: `up` under the same error handling as the library commands, and the variables
the command reads being the ones the services read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.settings import Settings as GatewaySettings
from recmesh import cli
from services.embedding_store.settings import Settings as EmbeddingStoreSettings
from serving.settings import CommonSettings

RECMESH = str(Path(sys.executable).with_name("recmesh"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECMESH, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_up_reports_a_runtime_error_in_one_line_and_exits_1(tmp_path: Path):
    models = tmp_path / "models"
    result = run("up", "--models-dir", str(models), "--cpu-limit", "ranking=zero")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "recmesh up: error: --cpu-limit 'ranking=zero': expected <service>=<cores> with service in "
        "embedding_store, candidate_generation, ranking, gateway and cores > 0, e.g. ranking=0.5"
    ]
    assert not models.exists()  # failed before training a demo bundle


def test_up_usage_error_exits_2():
    result = run("up", "--http-port", "eighty")
    assert result.returncode == 2 and "usage: recmesh up" in result.stderr and "Traceback" not in result.stderr


def test_console_script_has_every_library_command_and_up():
    result = run("--help")
    assert result.returncode == 0
    for command in ("data", "train", "evaluate", "publish", "events", "up"):
        assert f"    {command} " in result.stdout, command


def test_the_command_reads_the_variables_the_services_read():
    def alias(settings: type, field: str) -> object:
        return settings.model_fields[field].validation_alias  # type: ignore[attr-defined]

    assert alias(CommonSettings, "models_dir") == cli.MODELS_DIR_ENV
    assert alias(GatewaySettings, "redis_url") == cli.REDIS_URL_ENV
    assert alias(EmbeddingStoreSettings, "redis_url") == cli.REDIS_URL_ENV
    assert alias(EmbeddingStoreSettings, "redis_cache_url") == cli.REDIS_CACHE_URL_ENV
    assert GatewaySettings.model_fields["redis_url"].default == cli.DEFAULT_REDIS_URL
    assert CommonSettings.model_fields["models_dir"].default == Path(cli.DEFAULT_MODELS_DIR)


def test_every_option_of_the_console_script_has_help():
    from devtools import up

    missing = [
        f"{parser.prog} {action.option_strings[0]}"
        for parser in cli.parsers(cli.build_parser((up.add_command,)))
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert not missing
