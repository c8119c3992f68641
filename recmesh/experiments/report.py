"""An A/B experiment's report: per variant, its rate of one event type per answer served, against the control.

Reads the experiment's counts (``recmesh.redis_layout.experiment_counts_key``: ``{variant}:impressions`` and
``{variant}:{event type}``, see :mod:`recmesh.experiments.attribution`) and its variants' order from the config
(the first variant is the control). Per variant: impressions, events per type, rate = events / impressions with
a 95 % Wilson interval; against the control: the absolute and relative difference and the p-value of a
two-proportion test (chi-squared on the 2x2 table without continuity correction, the same as the pooled z-test);
and a verdict line per variant at a 5 % significance level ("no-ranking is worse than control: CTR 3.1 % vs
4.6 %, p = 0.0004", "no significant difference yet (p = 0.31)"). No correction for multiple variants or for
looking at the report repeatedly: a p-value just under 0.05 after many looks is weak evidence.

Usage::

    recmesh experiments report ranker-test                         # table + verdict on stdout
    recmesh experiments report ranker-test --metric purchase --json report.json --png report.png

    report = build_report("ranker-test", read_counts(client, "ranker-test"), ["control", "no-ranking"], "click")
    print(render_table(report)); print("\\n".join(report.verdicts))
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from recmesh.cli_redis import EXIT_BAD_INPUT, EXIT_REDIS, add_redis_url, fail, redis_client, redis_problem
from recmesh.experiments.attribution import IMPRESSIONS, is_valid_name, split_counts_field
from recmesh.experiments.commands import StoredConfigError, read_config
from recmesh.experiments.config import ExperimentConfig
from recmesh.extras import missing_extra
from recmesh.redis_layout import experiment_counts_key

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")  # the gateway's event types, in their order
METRIC_LABELS = {"view": "view rate", "click": "CTR", "add_to_cart": "add-to-cart rate", "purchase": "purchase rate"}
CONFIDENCE = 0.95  # of the Wilson intervals
ALPHA = 0.05  # significance level of the verdicts

REPORT = "recmesh experiments report"  # the command, as its error lines name it


Counts = dict[str, dict[str, int]]  # variant -> kind (impressions or an event type) -> count


class ReportError(ValueError):
    """The report cannot be made (no such experiment, nothing counted); the message says why."""


@dataclass(frozen=True)
class VariantStats:
    """One variant's numbers; the comparison fields are None for the control and where they are undefined."""

    name: str
    impressions: int
    events: dict[str, int]  # per event type
    rate: float | None  # metric events / impressions; None without impressions
    ci_low: float | None  # the Wilson interval of rate; None when undefined (no impressions, events > impressions)
    ci_high: float | None
    diff_abs: float | None  # rate - control's rate
    diff_rel: float | None  # diff_abs / control's rate
    p_value: float | None


@dataclass(frozen=True)
class Report:
    experiment: str
    metric: str  # the event type whose rate is compared
    control: str
    variants: list[VariantStats]  # the control first
    verdicts: list[str]  # one line per variant other than the control
    confidence: float = CONFIDENCE
    alpha: float = ALPHA

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.metric, f"{self.metric} rate")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


# -- statistics ------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of successes / trials; ValueError unless 0 <= successes <= trials, trials >= 1."""
    from scipy.stats import binomtest  # here: scipy.stats takes a while to import, and `recmesh --help` need not

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"a proportion needs 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def two_proportion_p_value(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float | None:
    """Two-sided p-value that both proportions are equal: chi-squared on the 2x2 table, no continuity correction
    (equal to the pooled two-proportion z-test). None when the test is undefined: an empty row (no trials) or
    column (no successes at all, or nothing but successes)."""
    from scipy.stats import chi2_contingency

    for s, n in ((successes_a, trials_a), (successes_b, trials_b)):
        if not 0 <= s <= n:
            raise ValueError(f"a proportion needs 0 <= successes <= trials, got {s}/{n}")
    table = [[successes_a, trials_a - successes_a], [successes_b, trials_b - successes_b]]
    if min(trials_a, trials_b, successes_a + successes_b, trials_a + trials_b - successes_a - successes_b) == 0:
        return None
    return float(chi2_contingency(table, correction=False).pvalue)


# -- the report ------------------------------------------------------------------------------------------------


def build_report(
    experiment: str, counts: Mapping[str, Mapping[str, int]], variants: Sequence[str], metric: str
) -> Report:
    """The report of ``counts`` (variant -> kind -> count) over ``variants`` in order (the first is the control;
    variants counted but not listed follow, by name). ReportError when there is no variant at all."""
    if metric not in EVENT_TYPES:
        raise ReportError(f"unknown metric {metric!r}: expected one of {', '.join(EVENT_TYPES)}")
    names = list(dict.fromkeys([*variants, *sorted(counts)]))
    if not names:
        raise ReportError(f"experiment {experiment!r} has no variants and nothing was counted")
    control = names[0]
    base = counts.get(control, {})
    base_n, base_k = base.get(IMPRESSIONS, 0), base.get(metric, 0)
    base_rate = base_k / base_n if base_n else None
    stats = [_variant_stats(name, counts.get(name, {}), metric, base_k, base_n, base_rate, control) for name in names]
    report = Report(experiment, metric, control, stats, [])
    lines = [_verdict(report, s, base_rate, len(stats) > 2) for s in stats[1:]]
    return Report(experiment, metric, control, stats, lines)


def _variant_stats(
    name: str, counted: Mapping[str, int], metric: str, base_k: int, base_n: int, base_rate: float | None, control: str
) -> VariantStats:
    n, k = counted.get(IMPRESSIONS, 0), counted.get(metric, 0)
    kinds = [*EVENT_TYPES, *sorted(set(counted) - {*EVENT_TYPES, IMPRESSIONS})]
    events = {kind: counted.get(kind, 0) for kind in kinds}
    rate = k / n if n else None
    low = high = None
    if n and k <= n:
        low, high = wilson_interval(k, n)
    diff_abs = diff_rel = p = None
    if name != control and rate is not None and base_rate is not None:
        diff_abs = rate - base_rate
        diff_rel = diff_abs / base_rate if base_rate else None
        if k <= n and base_k <= base_n:
            p = two_proportion_p_value(k, n, base_k, base_n)
    return VariantStats(name, n, events, rate, low, high, diff_abs, diff_rel, p)


def _verdict(report: Report, s: VariantStats, base_rate: float | None, several: bool) -> str:
    """One line on ``s`` against the control; prefixed by the pair when there are several comparisons."""
    pair = f"{s.name} vs {report.control}: "
    if s.impressions == 0 or base_rate is None:
        empty = report.control if base_rate is None else s.name
        return f"{pair}not enough data yet: {empty} has no impressions"
    if s.rate is not None and (s.rate > 1 or base_rate > 1):
        return f"{pair}no test: more {report.metric} events than impressions (not a rate per answer)"
    if s.p_value is None:  # every answer of both variants had the event, or none did
        none = s.rate == 0 and base_rate == 0
        what = f"no {report.metric} events yet" if none else f"every answer has a {report.metric} event"
        return f"{pair}not enough data yet: {what}"
    assert s.rate is not None
    if s.p_value < report.alpha:
        direction = "better" if s.rate > base_rate else "worse"
        return (
            f"{s.name} is {direction} than {report.control}: {report.label} {format_rate(s.rate)} vs "
            f"{format_rate(base_rate)}, {format_p(s.p_value)}"
        )
    return f"{pair if several else ''}no significant difference yet ({format_p(s.p_value)})"


def format_rate(rate: float) -> str:
    """3.1 %, or 0.45 % below one per cent."""
    return f"{100 * rate:.2f} %" if rate < 0.01 else f"{100 * rate:.1f} %"


def format_p(p: float) -> str:
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.2g}"


def render_table(report: Report) -> str:
    """The report as an aligned text table (one row per variant, the control first)."""
    kinds = list(report.variants[0].events)
    header = [
        "variant",
        "impressions",
        *kinds,
        report.label,
        f"{report.confidence:.0%} CI",
        "vs control",
        "relative",
        "p-value",
    ]
    rows = [header]
    for s in report.variants:
        rows.append(
            [
                s.name + (" (control)" if s.name == report.control else ""),
                str(s.impressions),
                *(str(s.events.get(kind, 0)) for kind in kinds),
                "-" if s.rate is None else format_rate(s.rate),
                "-"
                if s.ci_low is None or s.ci_high is None
                else f"{format_rate(s.ci_low)} .. {format_rate(s.ci_high)}",
                "-" if s.diff_abs is None else f"{100 * s.diff_abs:+.2f} pt",
                "-" if s.diff_rel is None else f"{100 * s.diff_rel:+.1f} %",
                "-" if s.p_value is None else f"{s.p_value:.4g}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def write_png(report: Report, path: str | Path) -> None:
    """A chart of each variant's rate with its Wilson interval (needs the ``plots`` extra: matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        raise missing_extra(e, "plots", "the experiment report's chart (--png)") from None
    shown = [s for s in report.variants if s.rate is not None]
    fig = Figure(figsize=(max(4.0, 1.2 * len(report.variants) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(shown)))
    rates = [100 * (s.rate or 0.0) for s in shown]
    below = [100 * ((s.rate or 0.0) - s.ci_low) if s.ci_low is not None else 0.0 for s in shown]
    above = [100 * (s.ci_high - (s.rate or 0.0)) if s.ci_high is not None else 0.0 for s in shown]
    colors = ["tab:gray" if s.name == report.control else "tab:blue" for s in shown]
    ax.bar(x, rates, color=colors, alpha=0.6)
    ax.errorbar(x, rates, yerr=[below, above], fmt="none", ecolor="black", capsize=6)
    ax.set_xticks(x, [s.name for s in shown])
    ax.set_ylabel(f"{report.label} (%)")
    ax.set_title(f"{report.experiment}: {report.label}, {report.confidence:.0%} Wilson intervals", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)


# -- Redis -----------------------------------------------------------------------------------------------------


def read_counts(client: redis.Redis, experiment: str) -> Counts:
    """The experiment's counts hash as variant -> kind -> count (fields recmesh did not write are skipped)."""
    raw = client.hgetall(experiment_counts_key(experiment))
    counts: Counts = {}
    for field, value in raw.items():  # type: ignore[union-attr]  # a sync client: a dict, not an awaitable
        parsed = split_counts_field(field.decode() if isinstance(field, bytes) else str(field))
        try:
            count = int(value)
        except ValueError:
            continue
        if parsed is not None:
            variant, kind = parsed
            counts.setdefault(variant, {})[kind] = count
    return counts


def read_experiment(client: redis.Redis, experiment: str) -> ExperimentConfig | None:
    """The experiment as the stored config has it (its variants in order, its status); None when the config does
    not name it (never started, or removed: the counts alone then give the variants, by name). StoredConfigError
    when the stored config does not validate."""
    return read_config(client).find(experiment)


# -- the CLI ---------------------------------------------------------------------------------------------------


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `report NAME` to the `recmesh experiments` group's subparsers."""
    report = sub.add_parser(
        "report", help="an experiment's rates per variant with 95 %% intervals, against the control, and a verdict"
    )
    report.add_argument("name", metavar="NAME", help="the experiment's name")
    report.add_argument(
        "--metric",
        default="click",
        choices=EVENT_TYPES,
        help="the event type whose rate per answer served is compared (default: click, the CTR)",
    )
    report.add_argument(
        "--png", metavar="FILE", help="also draw the rates and their intervals (needs matplotlib; default: no chart)"
    )
    report.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-': stdout; default: none)")
    add_redis_url(report)
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if not is_valid_name(args.name):
        message = f"experiment name {args.name!r} is not valid: expected 1 to 32 of a-z, 0-9, '_' and '-'"
        return fail(REPORT, message, EXIT_BAD_INPUT)
    if args.png:
        try:  # before any work: a missing extra is one line, not a half-written report
            import matplotlib  # noqa: F401
        except ModuleNotFoundError as e:
            return fail(
                REPORT, str(missing_extra(e, "plots", "the experiment report's chart (--png)")), 1
            )  # as a missing extra elsewhere
    try:
        client = redis_client(args.redis_url)
    except ValueError as e:
        return fail(REPORT, f"bad --redis-url: {e}", EXIT_BAD_INPUT)
    try:
        experiment = read_experiment(client, args.name)
        counts = read_counts(client, args.name)
    except StoredConfigError as e:
        return fail(REPORT, str(e), EXIT_REDIS)
    except redis.RedisError as e:
        return fail(REPORT, redis_problem(args.redis_url, e), EXIT_REDIS)
    finally:
        client.close()
    if experiment is None and not counts:
        return fail(
            REPORT,
            f"no experiment named {args.name!r}: not in the config and nothing counted",
            EXIT_BAD_INPUT,
        )
    variants = [v.name for v in experiment.variants] if experiment else []
    report = build_report(args.name, counts, variants, args.metric)
    state = experiment.status if experiment else "not in the config any more"
    print(f"experiment {report.experiment} ({state}): {report.label}, control {report.control}")
    print(render_table(report))
    print("\n".join(report.verdicts))
    try:
        if args.json == "-":
            print(json.dumps(report.to_dict(), indent=2))
        elif args.json:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if args.png:
            write_png(report, args.png)
    except OSError as e:
        return fail(
            REPORT,
            f"cannot write {e.filename or 'the output'}: {e.strerror or e}",
            EXIT_BAD_INPUT,
        )
    return 0
