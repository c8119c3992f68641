"""The `recmesh` console script as a user runs it (a real process): exit 1 and one stderr line for any runtime
error, never a traceback; exit 2 for usage errors only; --version; defaults from the services' variables."""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from devtools.stack import free_port
from recmesh import cli
from recmesh.bundle import list_versions

RECMESH = str(Path(sys.executable).with_name("recmesh"))


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REDIS_CACHE_URL", "RECMESH_MODELS_DIR", "RECMESH_DEBUG")
    }
    return subprocess.run(
        [RECMESH, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The run failed with status 1 and one `recmesh <command>: error: ...` line (after any progress output)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"recmesh {command}: error: "), result.stderr
    assert result.stderr.rstrip().endswith(errors[0])
    return errors[0]


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_missing_data_file(tmp_path: Path):
    line = assert_one_error_line(run("train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path)), "train")
    assert line.endswith(f"{tmp_path / 'nope.txt'}: no such file or directory")


def test_malformed_data_names_file_and_line(tmp_path: Path):
    data = tmp_path / "clicks.csv"
    data.write_text("session_id,item_id,timestamp\ns1,a,1\ns1,b,not-a-time\n")
    line = assert_one_error_line(run("train", "--data", str(data), "--out", str(tmp_path)), "train")
    assert "clicks.csv:3: time 'not-a-time'" in line


def test_compressed_data_file_is_named(tmp_path: Path):
    data = tmp_path / "sessions.txt.gz"
    with gzip.open(data, "wt") as f:
        f.write("u1 a b c\n")
    line = assert_one_error_line(run("train", "--data", str(data), "--out", str(tmp_path)), "train")
    assert line.endswith(f"{data}: not UTF-8 text (byte 1: invalid start byte); a compressed file? decompress it first")


def test_evaluate_given_a_models_directory_names_its_newest_bundle(models_dir: Path):
    line = assert_one_error_line(run("evaluate", "--bundle", str(models_dir)), "evaluate")
    assert line.endswith(f"pass one of its bundles, e.g. --bundle {models_dir / list_versions(models_dir)[-1]}")


def test_corrupt_bundle_is_refused_before_the_data_is_read(bundle_path: Path, tmp_path: Path):
    corrupt = tmp_path / bundle_path.name
    shutil.copytree(bundle_path, corrupt)
    with (corrupt / "ranker.json").open("a") as f:
        f.write(" ")
    # The data file does not exist either: the bundle's error comes first, so it was checked first.
    result = run("evaluate", "--bundle", str(corrupt), "--data", str(tmp_path / "missing.txt"))
    line = assert_one_error_line(result, "evaluate")
    assert "ranker.json does not match its sha256" in line and "recmesh train" in line


def test_publish_to_an_unreachable_redis(bundle_path: Path):
    url = unreachable_redis()
    line = assert_one_error_line(run("publish", str(bundle_path), "--redis-url", url), "publish")
    assert url.split("//")[1] in line and "--redis-url" in line and "REDIS_URL" in line


def test_events_export_from_an_unreachable_redis_named_by_the_environment(tmp_path: Path):
    url = unreachable_redis()
    result = run("events", "export", "--out", str(tmp_path / "events.csv"), env={"REDIS_URL": url})
    line = assert_one_error_line(result, "events export")
    assert url.split("//")[1] in line
    assert not (tmp_path / "events.csv").exists()


def test_models_dir_from_the_environment(tmp_path: Path):
    empty = tmp_path / "empty"
    line = assert_one_error_line(run("publish", env={"RECMESH_MODELS_DIR": str(empty)}), "publish")
    assert f"no bundle in {empty}" in line
    # the flag still wins over the variable
    line = assert_one_error_line(
        run("publish", "--models-dir", str(tmp_path / "flag"), env={"RECMESH_MODELS_DIR": str(empty)}), "publish"
    )
    assert f"no bundle in {tmp_path / 'flag'}" in line


def test_help_shows_the_environment_default_without_its_password():
    result = run("publish", "--help", env={"REDIS_URL": "redis://default:s3cret@store:6379/0"})
    assert result.returncode == 0
    assert "s3cret" not in result.stdout and "redis://default:***@store:6379/0" in " ".join(result.stdout.split())


def test_publish_takes_bundle_and_redis_from_the_environment(models_dir: Path, redis_server):  # type: ignore[no-untyped-def]
    result = run("publish", env={"RECMESH_MODELS_DIR": str(models_dir), "REDIS_URL": redis_server.url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == list_versions(models_dir)[-1]


def test_train_on_the_default_synthetic_data_prints_no_warning(tmp_path: Path):
    """What `make up` trains first (default data, index and ranker; fewer epochs). Fitting the ranker here used to
    print scikit-learn's LinAlgWarning and ConvergenceWarning (a float32 Hessian found singular)."""
    out = tmp_path / "models"
    result = run("train", "--epochs", "10", env={"RECMESH_MODELS_DIR": str(out)})
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr
    assert "ranker: held-out AUC" in result.stderr
    assert Path(result.stdout.strip()).parent == out and list_versions(out)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--no-such-flag"],
        ["train", "--index", "annoy"],
        ["evaluate"],  # --bundle is required
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str]):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "usage: recmesh" in result.stderr and "Traceback" not in result.stderr


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"recmesh {metadata.version('recmesh')}"


def test_debug_shows_the_traceback(tmp_path: Path):
    for how in (["--debug"], []):
        env = {} if how else {"RECMESH_DEBUG": "1"}
        result = run(*how, "train", "--data", str(tmp_path / "nope.txt"), env=env)
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "FileNotFoundError" in result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith("recmesh train: error: ")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path):
    proc = subprocess.Popen(
        [RECMESH, "train", "--data", "synth:items=2000,users=20000", "--out", str(tmp_path), "--index", "exact"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    proc.stderr.readline()  # it has started (the data set's progress bar)
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, stderr
    assert "recmesh train: interrupted" in stderr and "Traceback" not in stderr
    assert not list_versions(tmp_path)


def test_every_option_says_what_it_does_and_its_default():
    formatter = cli.HelpFormatter("recmesh")
    for parser in cli.parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{name} has no help text"
            flag = isinstance(action, argparse._StoreTrueAction)
            assert flag or action.required or "default" in (formatter._get_help_string(action) or ""), name


def test_index_choices_are_the_backends():
    from recmesh.index import BACKENDS

    train = next(p for p in cli.parsers(cli.build_parser()) if p.prog == "recmesh train")
    (index,) = (a for a in train._actions if "--index" in a.option_strings)
    assert tuple(index.choices or ()) == BACKENDS


def test_bad_items_file_is_one_line_naming_file_and_line_before_any_training(tmp_path: Path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "a", "price": 3}\n{"item_id": "b", "price": "cheap"}\n')
    result = run("train", "--items", str(items), "--out", str(tmp_path / "models"))
    line = assert_one_error_line(result, "train")
    assert line.endswith(f"{items}:2: item 'b', attribute 'price': expected a number, got 'cheap'")
    assert "synth:" not in result.stderr  # failed before generating or reading any sessions
    assert not list_versions(tmp_path / "models")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"item_id": "a"}\n{"item_id": "a"}\n', "items.jsonl:2: duplicate item id 'a' (first on line 1)"),
        (None, "items.jsonl: no such file or directory"),
    ],
)
def test_items_file_errors_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, expected: str
):
    items = tmp_path / "items.jsonl"
    if text is not None:
        items.write_text(text)
    assert cli.main(["train", "--items", str(items), "--out", str(tmp_path / "models")]) == 1
    assert capsys.readouterr().err == f"recmesh train: error: {tmp_path / expected}\n"
