"""The experiment report: Wilson intervals and two-proportion p-values against their closed forms, the verdicts,
the recommendation ids that carry an experiment, and `recmesh experiments report` against a real Redis."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.stack import free_port
from recmesh.experiments.attribution import (
    counts_field,
    new_recommendation_id,
    parse_recommendation_id,
    split_counts_field,
)
from recmesh.experiments.report import (
    add_report_parser,
    build_report,
    format_p,
    read_counts,
    render_table,
    two_proportion_p_value,
    wilson_interval,
    write_png,
)
from recmesh.redis_layout import EXPERIMENTS_KEY, experiment_counts_key

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
DB = 12  # a database of its own
ROOT = Path(__file__).resolve().parents[2]


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def pooled_z_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2)), p pooled; 2(1 - Φ(|z|)) = erfc(|z|/√2)."""
    pooled = (k1 + k2) / (n1 + n2)
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


# -------------------------------------------------------------------------------------------- recommendation ids
def test_a_recommendation_id_carries_its_experiment_and_variant() -> None:
    rid = new_recommendation_id("ranker-test", "no_ranking-2")
    head, experiment, variant = rid.split(".")
    assert len(head) == 32 and int(head, 16) >= 0 and (experiment, variant) == ("ranker-test", "no_ranking-2")
    assert parse_recommendation_id(rid) == ("ranker-test", "no_ranking-2")
    assert new_recommendation_id("a", "b") != new_recommendation_id("a", "b")
    longest = new_recommendation_id("e" * 32, "v" * 32)
    assert parse_recommendation_id(longest) == ("e" * 32, "v" * 32)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "session-1",
        "0" * 32,  # a recommendation outside any experiment
        "0" * 32 + ".exp",
        "0" * 32 + ".exp.",
        "0" * 32 + ".Exp.control",
        "0" * 32 + ".exp.con.trol",
        "0" * 31 + ".exp.control",
        "0" * 31 + "G.exp.control",
        "0" * 32 + ".exp." + "v" * 33,
        " " + "0" * 32 + ".exp.control",
        "0" * 32 + ".exp.control\n",
    ],
)
def test_anything_else_is_not_a_recommendation_id(text: str) -> None:
    assert parse_recommendation_id(text) is None


@pytest.mark.parametrize("experiment, variant", [("", "a"), ("a.b", "c"), ("A", "b"), ("a", "b" * 33), ("a", "b c")])
def test_an_invalid_name_makes_no_recommendation_id(experiment: str, variant: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        new_recommendation_id(experiment, variant)


def test_counts_fields() -> None:
    assert counts_field("control", "click") == "control:click"
    assert split_counts_field("control:impressions") == ("control", "impressions")
    assert split_counts_field("control") is None and split_counts_field("Con trol:click") is None


# -------------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (46, 1000), (310, 10_000), (10, 10), (3, 7)])
def test_the_wilson_interval_is_the_closed_form(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
    assert low <= k / n <= high


def test_wilson_interval_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-7)  # z²/(n+z²)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


@pytest.mark.parametrize(
    "k1, n1, k2, n2",
    [(124, 4000, 184, 4000), (45, 1000, 50, 1000), (1, 3, 2, 3), (500, 10_000, 41, 700), (7, 20, 0, 15)],
)
def test_the_p_value_is_the_pooled_z_test(k1: int, n1: int, k2: int, n2: int) -> None:
    assert abs(two_proportion_p_value(k1, n1, k2, n2) - pooled_z_test(k1, n1, k2, n2)) < 1e-9  # type: ignore[operator]


def test_the_p_value_is_undefined_without_data_in_a_row_or_column() -> None:
    assert two_proportion_p_value(0, 100, 0, 100) is None  # no events at all
    assert two_proportion_p_value(100, 100, 5, 5) is None  # nothing but events
    assert two_proportion_p_value(0, 0, 3, 100) is None  # no impressions
    with pytest.raises(ValueError):
        two_proportion_p_value(5, 4, 1, 10)


def test_format_p() -> None:
    assert format_p(0.31) == "p = 0.31"
    assert format_p(0.0004) == "p = 0.0004"
    assert format_p(0.00000123) == "p < 0.0001"


# ----------------------------------------------------------------------------------------------------- reports
def test_a_report_against_the_control() -> None:
    counts = {
        "control": {"impressions": 4000, "click": 184, "view": 3000, "purchase": 9},
        "no-ranking": {"impressions": 4000, "click": 124, "view": 2900},
    }
    report = build_report("ranker-test", counts, ["control", "no-ranking"], "click")
    control, treated = report.variants
    assert (report.control, control.name, treated.name) == ("control", "control", "no-ranking")
    assert control.events == {"view": 3000, "click": 184, "add_to_cart": 0, "purchase": 9}
    assert control.rate == pytest.approx(0.046) and treated.rate == pytest.approx(0.031)
    assert (control.ci_low, control.ci_high) == pytest.approx(wilson_by_hand(184, 4000), abs=1e-12)
    assert control.diff_abs is None and control.p_value is None
    assert treated.diff_abs == pytest.approx(-0.015)
    assert treated.diff_rel == pytest.approx(-0.015 / 0.046)
    assert treated.p_value == pytest.approx(pooled_z_test(124, 4000, 184, 4000), abs=1e-9)
    assert report.verdicts == ["no-ranking is worse than control: CTR 3.1 % vs 4.6 %, p = 0.00049"]
    purchases = build_report("ranker-test", counts, ["control", "no-ranking"], "purchase")
    assert purchases.label == "purchase rate" and purchases.verdicts[0].startswith("no-ranking is worse")


def test_no_significant_difference_and_several_variants() -> None:
    two = {"control": {"impressions": 1000, "click": 50}, "b": {"impressions": 1000, "click": 45}}
    assert build_report("e", two, ["control", "b"], "click").verdicts == ["no significant difference yet (p = 0.6)"]
    three = {**two, "b": {"impressions": 1000, "click": 60}, "holdout": {"impressions": 1000, "click": 75}}
    assert build_report("e", three, ["control", "b", "holdout"], "click").verdicts == [
        "b vs control: no significant difference yet (p = 0.33)",
        "holdout is better than control: CTR 7.5 % vs 5.0 %, p = 0.021",
    ]


def test_reports_without_enough_data_say_so() -> None:
    nothing_yet = build_report("e", {}, ["control", "b"], "click")
    assert [v.impressions for v in nothing_yet.variants] == [0, 0]
    assert nothing_yet.verdicts == ["b vs control: not enough data yet: control has no impressions"]
    no_clicks = {"control": {"impressions": 50}, "b": {"impressions": 40}}
    assert build_report("e", no_clicks, ["control", "b"], "click").verdicts == [
        "b vs control: not enough data yet: no click events yet"
    ]
    views = {"control": {"impressions": 5, "view": 9}, "b": {"impressions": 5, "view": 2}}
    report = build_report("e", views, ["control", "b"], "view")
    assert report.variants[0].rate == pytest.approx(1.8) and report.variants[0].ci_low is None
    assert report.verdicts == ["b vs control: no test: more view events than impressions (not a rate per answer)"]


def test_variants_counted_but_not_configured_follow_the_configured_ones() -> None:
    counts = {"zeta": {"impressions": 3}, "control": {"impressions": 3}, "alpha": {"impressions": 1}}
    report = build_report("e", counts, ["control", "b"], "click")
    assert [v.name for v in report.variants] == ["control", "b", "alpha", "zeta"]
    assert [v.name for v in build_report("e", counts, [], "click").variants] == ["alpha", "control", "zeta"]


def test_the_table_json_and_chart(tmp_path: Path) -> None:
    counts = {"control": {"impressions": 4000, "click": 184}, "no-ranking": {"impressions": 4000, "click": 124}}
    report = build_report("ranker-test", counts, ["control", "no-ranking"], "click")
    lines = render_table(report).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:6] == ["variant", "impressions", "view", "click", "add_to_cart", "purchase"]
    assert lines[1].startswith("control (control)") and "4.6 %" in lines[1]
    assert "-1.50 pt" in lines[2] and "-32.6 %" in lines[2] and "0.0004892" in lines[2]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["control"] == "control" and data["label"] == "CTR" and data["verdicts"] == report.verdicts
    assert data["variants"][1]["events"]["click"] == 124
    write_png(report, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------- the command
CONFIG = {
    "version": 1,
    "experiments": [
        {
            "name": "ranker-test",
            "status": "running",
            "unit": "visitor",
            "variants": [
                {"name": "control", "share": 50, "options": {}},
                {"name": "no-ranking", "share": 50, "options": {"skip_ranking": True}},
            ],
            "started_at": "2026-12-01T20:00:00Z",
            "stopped_at": None,
        }
    ],
}


@pytest.fixture
def store(redis_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set(EXPERIMENTS_KEY, json.dumps(CONFIG))
    # no-ranking first in the hash: the config's order, not the hash's, picks the control
    for field, value in {"no-ranking:impressions": 4000, "no-ranking:click": 124, "control:impressions": 4000}.items():
        client.hset(experiment_counts_key("ranker-test"), field, value)
    client.hset(experiment_counts_key("ranker-test"), "control:click", 184)
    client.hset(experiment_counts_key("ranker-test"), "not written by recmesh", 1)
    yield url
    client.flushdb()
    client.close()


def report_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="recmesh experiments")
    add_report_parser(parser.add_subparsers(dest="experiments_command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_read_counts(store: str) -> None:
    client = redis.Redis.from_url(store)
    try:
        assert read_counts(client, "ranker-test") == {
            "control": {"impressions": 4000, "click": 184},
            "no-ranking": {"impressions": 4000, "click": 124},
        }
        assert read_counts(client, "never-started") == {}
    finally:
        client.close()


def test_the_report_command(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    status = report_command(
        "report", "ranker-test", "--redis-url", store, "--json", str(out_json), "--png", str(out_png)
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err
    lines = printed.out.splitlines()
    assert lines[0] == "experiment ranker-test (running): CTR, control control"
    assert lines[2].startswith("control (control)") and lines[3].startswith("no-ranking")
    assert lines[-1] == "no-ranking is worse than control: CTR 3.1 % vs 4.6 %, p = 0.00049"
    assert json.loads(out_json.read_text())["verdicts"] == [lines[-1]]
    assert out_png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["report", "unknown"], 2, "no experiment named 'unknown': not in the config and nothing counted"),
        (["report", "Bad.Name"], 2, "experiment name 'Bad.Name' is not valid"),
        (["report", "ranker-test", "--json", "/nonexistent/dir/r.json"], 2, "cannot write /nonexistent/dir/r.json"),
    ],
)
def test_report_errors_are_one_line(
    store: str, argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_command(*argv, "--redis-url", store) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"recmesh experiments report: error: {message}")


def test_redis_down_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    assert report_command("report", "ranker-test", "--redis-url", down) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is Redis running there?" in err


def test_the_chart_without_matplotlib_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import argparse\n"
        "from recmesh.experiments.report import add_report_parser\n"
        "p = argparse.ArgumentParser(); add_report_parser(p.add_subparsers())\n"
        f"a = p.parse_args(['report', 'x', '--png', {str(tmp_path / 'r.png')!r}])\n"
        "raise SystemExit(a.func(a))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr == (
        "recmesh experiments report: error: the experiment report's chart (--png) needs matplotlib, which is not "
        "installed here: pip install 'recmesh[plots]'\n"
    )
