"""The experiments document (recmesh.experiments.config): what it accepts, what it refuses and how it says so,
the merge of a variant's options into a request's, start/stop edits, and the `recmesh experiments` commands
against the real session Redis (own db)."""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from recmesh.bundle import MANIFEST
from recmesh.experiments import commands
from recmesh.experiments import config as cfg
from recmesh.experiments.config import (
    ExperimentConfigError,
    ExperimentSet,
    merge_options,
    parse_config,
    start_experiment,
    stop_experiment,
    validate,
)
from recmesh.redis_layout import EXPERIMENTS_KEY
from serving import limits
from tests.helpers import redis_url

DB = 13


def document() -> dict[str, Any]:
    return {
        "version": 3,
        "experiments": [
            {
                "name": "ranker-test",
                "status": "running",
                "unit": "visitor",
                "variants": [
                    {"name": "control", "share": 50, "options": {}},
                    {"name": "no-ranking", "share": 45, "options": {"skip_ranking": True}},
                    {"name": "holdout", "share": 5, "holdout": True},
                ],
                "started_at": "2026-12-01T20:00:00Z",
                "stopped_at": None,
            }
        ],
    }


def with_variant_options(options: dict[str, Any]) -> dict[str, Any]:
    doc = document()
    doc["experiments"][0]["variants"][1]["options"] = options
    return doc


def test_the_design_example_parses_and_round_trips():
    experiments = validate(document())
    running = experiments.running
    assert running is not None and running.name == "ranker-test" and running.unit == "visitor"
    assert [(v.name, v.share_bp, v.holdout) for v in running.variants] == [
        ("control", 5000, False),
        ("no-ranking", 4500, False),
        ("holdout", 500, True),
    ]
    assert running.bounds == (5000, 9500, 10000)
    assert dict(running.variants[1].options) == {"skip_ranking": True}
    assert experiments.version == 3
    assert parse_config(experiments.dumps()) == experiments
    assert json.loads(experiments.dumps()) == document()


def test_shares_with_two_decimals_are_exact():
    doc = document()
    for variant, share in zip(doc["experiments"][0]["variants"], (33.33, 33.33, 33.34), strict=True):
        variant["share"] = share
    running = validate(doc).running
    assert running is not None and running.bounds == (3333, 6666, 10000)
    assert [v.share for v in running.variants] == [33.33, 33.33, 33.34]


def test_an_empty_document_runs_nothing():
    assert validate({}).running is None
    assert validate({"version": 0, "experiments": []}) == ExperimentSet()


def broken(change: Any) -> dict[str, Any]:
    doc = document()
    change(doc)
    return doc


def _experiment(doc: dict[str, Any]) -> dict[str, Any]:
    experiment: dict[str, Any] = doc["experiments"][0]
    return experiment


def _variant(doc: dict[str, Any], i: int = 1) -> dict[str, Any]:
    variant: dict[str, Any] = _experiment(doc)["variants"][i]
    return variant


BAD_DOCUMENTS = {
    "not an object": ([1, 2], "must be a JSON object"),
    "unknown top key": ({"version": 1, "experiments": [], "extra": 1}, "unknown key 'extra'"),
    "bad version": ({"version": -1, "experiments": []}, "version must be an integer"),
    "bad name": (broken(lambda d: _experiment(d).update(name="Ranker.Test")), "name must match"),
    "dotted variant": (broken(lambda d: _variant(d).update(name="no.ranking")), "name must match"),
    "one variant": (broken(lambda d: _experiment(d).update(variants=[_variant(d, 0)])), "2 to 20, got 1"),
    "sum 99": (broken(lambda d: _variant(d).update(share=44)), "sum to exactly 100, got 50 + 44 + 5 = 99"),
    "zero share": (broken(lambda d: _variant(d, 2).update(share=0)), "share must be > 0"),
    "negative share": (broken(lambda d: _variant(d, 2).update(share=-5)), "share must be > 0"),
    "3 decimals": (broken(lambda d: _variant(d, 2).update(share=4.999)), "more than 2 decimals"),
    "share text": (broken(lambda d: _variant(d, 2).update(share="5")), "share must be a number"),
    "share bool": (broken(lambda d: _variant(d, 2).update(share=True)), "share must be a number"),
    "same variant": (broken(lambda d: _variant(d, 2).update(name="control")), "variant name 'control' appears twice"),
    "bad unit": (broken(lambda d: _experiment(d).update(unit="user")), "unit must be one of"),
    "bad status": (broken(lambda d: _experiment(d).update(status="paused")), "status must be one of"),
    "bad time": (broken(lambda d: _experiment(d).update(started_at="yesterday")), "started_at must be an ISO"),
    "unknown experiment key": (broken(lambda d: _experiment(d).update(owner="me")), "unknown key 'owner'"),
    "unknown variant key": (broken(lambda d: _variant(d).update(weight=3)), "unknown key 'weight'"),
    "holdout options": (
        broken(lambda d: _variant(d, 2).update(options={"skip_ranking": True})),
        "a holdout variant is served popular items only",
    ),
    "holdout not bool": (broken(lambda d: _variant(d, 2).update(holdout="yes")), "holdout must be true or false"),
    "unknown option": (with_variant_options({"pins": []}), "unknown key 'pins'"),
    "skip_ranking text": (with_variant_options({"skip_ranking": "yes"}), "options.skip_ranking must be true or"),
    "candidate_count 0": (with_variant_options({"candidate_count": 0}), "options.candidate_count must be an integer"),
    "candidate_count big": (with_variant_options({"candidate_count": 1001}), "from 1 to 1000"),
    "candidate_count bool": (with_variant_options({"candidate_count": True}), "options.candidate_count must be"),
    "bad recipe": (with_variant_options({"sources": "ann:100,magic:5"}), "unknown source 'magic'"),
    "bad filter": (with_variant_options({"filter": "price <"}), "options.filter:"),
    "empty filter": (with_variant_options({"filter": " "}), "options.filter must be a non-empty filter"),
    "boost without filter": (with_variant_options({"boosts": [{"multiply": 2}]}), "options.boosts[0].filter is"),
    "boost bad filter": (with_variant_options({"boosts": [{"filter": "and"}]}), "options.boosts[0].filter:"),
    "boost negative": (
        with_variant_options({"boosts": [{"filter": "sale", "multiply": -1}]}),
        "options.boosts[0].multiply must be a finite number >= 0",
    ),
    "boost unknown key": (with_variant_options({"boosts": [{"filter": "sale", "pin": 1}]}), "unknown key 'pin'"),
    "boost include": (with_variant_options({"boosts": [{"filter": "sale", "include": 101}]}), "include must be"),
    "too many boosts": (with_variant_options({"boosts": [{"filter": "sale"}] * 21}), "at most 20 boosts"),
    "diversity cap": (
        with_variant_options({"diversity": {"attribute": "brand", "max_per_value": 0}}),
        "options.diversity.max_per_value must be an integer >= 1",
    ),
    "diversity key": (with_variant_options({"diversity": {"attribute": "brand"}}), "max_per_value must be"),
    "model_version type": (with_variant_options({"model_version": 7}), "options.model_version must be a model"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_a_broken_rule_is_refused_naming_it(case: str):
    doc, expected = BAD_DOCUMENTS[case]
    with pytest.raises(ExperimentConfigError) as caught:
        validate(copy.deepcopy(doc))
    assert expected in str(caught.value)


def test_errors_name_the_experiment_and_the_variant():
    with pytest.raises(ExperimentConfigError, match=r"experiment 'ranker-test', variant 'no-ranking': options\."):
        validate(with_variant_options({"candidate_count": 0}))
    with pytest.raises(ExperimentConfigError, match=r"experiment 'ranker-test', variant 'holdout': share"):
        validate(broken(lambda d: _variant(d, 2).update(share=0)))


def test_at_most_one_experiment_runs_and_names_are_unique():
    doc = document()
    second = copy.deepcopy(_experiment(doc))
    second["name"] = "other"
    doc["experiments"].append(second)
    with pytest.raises(ExperimentConfigError, match="at most one experiment may run at a time, 2 are: ranker-test"):
        validate(doc)
    second["status"] = "stopped"
    assert validate(doc).running is not None
    second["name"] = "ranker-test"
    with pytest.raises(ExperimentConfigError, match="experiment name 'ranker-test' appears twice"):
        validate(doc)


def test_bad_json_is_refused_not_raised_as_something_else():
    for text in ("{", b"\xff\xfe", '{"version": NaN, "experiments": []}', ""):
        with pytest.raises(ExperimentConfigError, match="not JSON"):
            parse_config(text)


def test_model_versions_are_checked_for_the_running_experiment_only():
    doc = with_variant_options({"model_version": "v2"})
    assert validate(doc, available_versions={"v1", "v2"}).running is not None
    assert validate(doc).running is not None  # None: the caller cannot say, nothing is checked
    with pytest.raises(ExperimentConfigError, match="version 'v2' is not available \\(available: v1\\)"):
        validate(doc, available_versions={"v1"})
    _experiment(doc)["status"] = "stopped"
    assert validate(doc, available_versions={"v1"}).running is None  # serves nobody: an old bundle may be gone


def test_valid_options_of_every_kind_are_kept_read_only():
    options = {
        "skip_ranking": False,
        "sources": "ann:100,covisit:50",
        "candidate_count": 300,
        "filter": 'category == "shoes"',
        "filter_strict": True,
        "boosts": [{"filter": "sale", "multiply": 1.5, "add": 0.1, "include": 3, "name": "sale"}],
        "diversity": {"attribute": "brand", "max_per_value": 2},
        "model_version": "v2",
    }
    running = validate(with_variant_options(options), {"v2"}).running
    assert running is not None
    kept = running.variants[1].options
    assert cfg.plain(kept) == options
    with pytest.raises(TypeError):
        kept["filter"] = "x"  # type: ignore[index]


def test_merge_the_variant_wins_except_filter_and_boosts():
    request = {"filter": "price < 50", "boosts": [{"filter": "new", "multiply": 2.0}], "skip_ranking": False, "k": 5}
    variant = validate(
        with_variant_options(
            {
                "filter": "available",
                "boosts": [{"filter": "sale", "add": 1.0}],
                "skip_ranking": True,
                "sources": "ann:5",
            }
        )
    ).running
    assert variant is not None
    merged = merge_options(request, variant.variants[1].options)
    assert merged == {
        "filter": "(price < 50) and (available)",
        "boosts": [{"filter": "new", "multiply": 2.0}, {"filter": "sale", "add": 1.0}],
        "skip_ranking": True,
        "sources": "ann:5",
        "k": 5,
    }
    assert request["filter"] == "price < 50" and len(request["boosts"]) == 1  # the request is not changed
    merged["boosts"][1]["add"] = 9.0  # nor is the shared variant through the merged copy
    assert variant.variants[1].options["boosts"][0]["add"] == 1.0


def test_merge_with_nothing_on_one_side():
    assert merge_options({"filter": "a"}, {}) == {"filter": "a"}
    assert merge_options({}, {"filter": "b", "boosts": ({"filter": "c"},)}) == {
        "filter": "b",
        "boosts": [{"filter": "c"}],
    }
    assert merge_options({"filter": None, "boosts": None}, {"filter": "b"}) == {"filter": "b", "boosts": None}
    assert merge_options({"filter": "", "boosts": []}, {"boosts": [{"filter": "c"}]})["boosts"] == [{"filter": "c"}]


def test_the_merged_filter_still_parses():
    from recmesh.catalog.expressions import parse

    merged = merge_options({"filter": "a or b"}, {"filter": "not c or d"})
    assert merged["filter"] == "(a or b) and (not c or d)"
    parse(merged["filter"])


def test_option_caps_agree_with_serving_limits():
    assert cfg.MAX_CANDIDATE_COUNT == limits.MAX_CANDIDATE_COUNT
    assert cfg.MAX_BOOSTS == limits.MAX_BOOSTS
    assert cfg.MAX_BOOST_INCLUDE == limits.MAX_BOOST_INCLUDE
    assert cfg.MAX_VERSION_LEN == limits.MAX_VERSION_LEN
    assert cfg.MAX_SCORE == limits.MAX_SCORE


# ------------------------------------------------------------------------------------------------ start / stop

NEW = {
    "name": "boost-test",
    "unit": "session",
    "description": "does a sale boost help?",
    "variants": [
        {"name": "control", "share": 50},
        {"name": "boosted", "share": 50, "options": {"boosts": [{"filter": "sale", "multiply": 1.2}]}},
    ],
}


def test_start_and_stop_bump_the_version_and_keep_the_history():
    started = start_experiment(ExperimentSet(), NEW, "2026-12-01T20:00:00Z")
    assert started.version == 1
    running = started.running
    assert running is not None and running.name == "boost-test" and running.started_at == "2026-12-01T20:00:00Z"
    stopped = stop_experiment(started, "boost-test", "2026-12-02T20:00:00Z")
    assert stopped.version == 2 and stopped.running is None
    assert stopped.experiments[0].stopped_at == "2026-12-02T20:00:00Z"
    again = start_experiment(stopped, {**NEW, "name": "boost-test-2"}, "2026-12-03T00:00:00Z")
    assert [e.name for e in again.experiments] == ["boost-test", "boost-test-2"] and again.version == 3


def test_start_refuses_a_second_running_a_used_name_and_fields_set_by_the_commands():
    started = start_experiment(ExperimentSet(), NEW, "2026-12-01T20:00:00Z")
    with pytest.raises(ExperimentConfigError, match="'boost-test' is running: stop it first"):
        start_experiment(started, {**NEW, "name": "other"}, "2026-12-01T21:00:00Z")
    stopped = stop_experiment(started, "boost-test", "2026-12-01T22:00:00Z")
    with pytest.raises(ExperimentConfigError, match="exists already"):
        start_experiment(stopped, NEW, "2026-12-01T23:00:00Z")
    with pytest.raises(ExperimentConfigError, match="status: set by"):
        start_experiment(stopped, {**NEW, "name": "x", "status": "running"}, "2026-12-01T23:00:00Z")
    with pytest.raises(ExperimentConfigError, match="already stopped"):
        stop_experiment(stopped, "boost-test", "2026-12-02T00:00:00Z")
    with pytest.raises(ExperimentConfigError, match="no experiment named 'nope' \\(experiments: boost-test\\)"):
        stop_experiment(stopped, "nope", "2026-12-02T00:00:00Z")


# ------------------------------------------------------------------------------------------------ the commands


@pytest.fixture
def url(redis_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    address = redis_url(redis_server, DB)
    client = redis.Redis.from_url(address)
    client.delete(EXPERIMENTS_KEY)
    yield address
    client.delete(EXPERIMENTS_KEY)
    client.close()


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="recmesh")
    commands.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_the_commands_start_list_show_and_stop(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    file = tmp_path / "boost.json"
    file.write_text(json.dumps(NEW))
    assert run("experiments", "start", str(file), "--redis-url", url) == 0
    assert (
        "started experiment boost-test (control 50 %, boosted 50 %); configuration version 1" in capsys.readouterr().out
    )
    assert run("experiments", "list", "--redis-url", url) == 0
    listing = capsys.readouterr().out
    assert "boost-test" in listing and "running" in listing and "session" in listing
    assert run("experiments", "show", "boost-test", "--redis-url", url) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["variants"][1]["options"]["boosts"] == [{"filter": "sale", "multiply": 1.2}]
    assert run("experiments", "stop", "boost-test", "--redis-url", url) == 0
    assert "configuration version 2" in capsys.readouterr().out
    reader = redis.Redis.from_url(url)
    stored = parse_config(reader.get(EXPERIMENTS_KEY) or b"")
    reader.close()
    assert stored.version == 2 and stored.running is None and stored.experiments[0].stopped_at


def test_the_commands_fail_with_one_line_and_the_right_status(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**NEW, "variants": [{"name": "a", "share": 60}, {"name": "b", "share": 30}]}))
    assert run("experiments", "start", str(bad), "--redis-url", url) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "recmesh experiments start: error:" in err and "sum to exactly 100" in err
    assert run("experiments", "start", str(tmp_path / "missing.json"), "--redis-url", url) == 2
    assert "missing.json" in capsys.readouterr().err
    bad.write_text("{not json")
    assert run("experiments", "start", str(bad), "--redis-url", url) == 2
    assert "not JSON" in capsys.readouterr().err
    versioned = tmp_path / "versioned.json"
    versioned.write_text(
        json.dumps(
            {
                **NEW,
                "variants": [
                    {"name": "a", "share": 50},
                    {"name": "b", "share": 50, "options": {"model_version": "nope"}},
                ],
            }
        )
    )
    assert run("experiments", "start", str(versioned), "--redis-url", url, "--models-dir", str(tmp_path)) == 2
    assert "'nope' is not available" in capsys.readouterr().err
    assert run("experiments", "stop", "nope", "--redis-url", url) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err
    assert run("experiments", "show", "nope", "--redis-url", url) == 2
    writer = redis.Redis.from_url(url)
    writer.set(EXPERIMENTS_KEY, b"{broken")
    writer.close()
    assert run("experiments", "list", "--redis-url", url) == 1
    assert "the stored configuration (recmesh:experiments) is invalid" in capsys.readouterr().err
    assert run("experiments", "list", "--redis-url", "redis://127.0.0.1:1/0") == 1
    err = capsys.readouterr().err
    assert "is Redis running there?" in err and err.count("\n") == 1


def test_start_checks_model_versions_against_the_models_dir(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    models = tmp_path / "models"
    (models / "20261201-1200").mkdir(parents=True)
    (models / "20261201-1200" / MANIFEST).write_text("{}")  # what list_versions looks for
    file = tmp_path / "versions.json"
    variants = [{"name": "a", "share": 50}, {"name": "b", "share": 50, "options": {"model_version": "20261201-1200"}}]
    file.write_text(json.dumps({**NEW, "variants": variants}))
    assert run("experiments", "start", str(file), "--redis-url", url, "--models-dir", str(models)) == 0, (
        capsys.readouterr().err
    )
