"""The experiments configuration: one JSON document in the store's ``recmesh:experiments`` key, checked whole.

    {"version": 3, "experiments": [
      {"name": "ranker-test", "status": "running", "unit": "visitor",
       "variants": [{"name": "control", "share": 50, "options": {}},
                    {"name": "no-ranking", "share": 45, "options": {"skip_ranking": true}},
                    {"name": "holdout", "share": 5, "holdout": true}],
       "started_at": "2026-12-01T20:00:00Z", "stopped_at": null}]}

Rules (each broken one is an :class:`ExperimentConfigError` naming the experiment and the variant):

- names match ``[a-z0-9_-]{1,32}`` (no dots: a recommendation id carries them after dots) and are unique: the
  experiments' names in the document, the variants' names in their experiment;
- an experiment has 2 to 20 variants whose shares (percent, integers or decimals with at most 2 decimals, each
  > 0) sum to exactly 100; at most ONE experiment is running (a request is in at most one);
- ``unit`` is ``visitor`` (the request's user_id, else its session_id) or ``session`` (the session_id only);
- a variant's ``options`` use only the REST option names below, checked as the gateway checks a request's (a
  filter's syntax, a recipe, the caps); a holdout variant (``"holdout": true``, served popular items only) has
  none. A ``model_version`` must be one the caller can serve (``available_versions``), checked for the running
  experiment only: a stopped one serves nobody, so an old bundle removed later does not block the document.

Which visitor lands in which variant depends only on the experiment's name, the unit id and the variants' order
and shares (recmesh.experiments.assign), so editing a document never moves anyone in a variant whose range of
buckets is unchanged: changing options, the description or other experiments moves nobody; appending a variant
whose share is taken from the LAST one moves only visitors of that last variant's released range; editing shares
moves only the visitors of the buckets that change hands. Renaming the experiment reshuffles everyone.

Usage::

    experiments = parse_config(redis_bytes, available_versions={"20261201-1200"})
    experiments.running                  # the running ExperimentConfig, or None
    merged = merge_options({"filter": "price < 50"}, variant.options)
    started = start_experiment(experiments, json.loads(file_text), now_iso())   # version + 1
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeGuard

from recmesh.catalog.expressions import ExpressionError
from recmesh.catalog.expressions import parse as parse_expression
from recmesh.sources.recipe import RecipeError, parse_recipe

NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
RUNNING, STOPPED = "running", "stopped"
STATUSES = (RUNNING, STOPPED)
UNITS = ("visitor", "session")
BASIS_POINTS = 10_000  # shares are percent with at most 2 decimals: 100 % is 10,000 basis points
MIN_VARIANTS, MAX_VARIANTS = 2, 20
MAX_EXPERIMENTS = 1000  # stopped ones stay in the document (their counts are reported)
MAX_DESCRIPTION_CHARS = 500
# The caps of a request's options (serving.limits, which recmesh cannot import; a test checks they agree).
MAX_CANDIDATE_COUNT = 1000
MAX_RECIPE_CHARS = 200
MAX_BOOSTS = 20
MAX_BOOST_INCLUDE = 100
MAX_BOOST_NAME_CHARS = 64
MAX_VERSION_LEN = 128
MAX_SCORE = 3.4028234663852886e38

EXPERIMENT_KEYS = frozenset({"name", "status", "unit", "variants", "started_at", "stopped_at", "description"})
VARIANT_KEYS = frozenset({"name", "share", "options", "holdout"})
OPTION_KEYS = frozenset(
    {"skip_ranking", "sources", "candidate_count", "filter", "filter_strict", "boosts", "diversity", "model_version"}
)
BOOST_KEYS = frozenset({"filter", "multiply", "add", "include", "name"})
DIVERSITY_KEYS = frozenset({"attribute", "max_per_value"})
SET_BY_COMMANDS = ("status", "started_at", "stopped_at")  # a file given to `start` does not say these


class ExperimentConfigError(ValueError):
    """A configuration that cannot serve; the message names the experiment and the variant at fault."""


@dataclass(frozen=True)
class Variant:
    name: str
    share_bp: int  # basis points of the 10,000 buckets
    options: Mapping[str, Any]  # read-only, validated REST option names
    holdout: bool = False

    @property
    def share(self) -> int | float:
        """The share in percent as written: 50, 33.33."""
        whole, rest = divmod(self.share_bp, 100)
        return whole if rest == 0 else self.share_bp / 100

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "share": self.share}
        if self.holdout:
            out["holdout"] = True
        else:
            out["options"] = plain(self.options)
        return out


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment of the document."""

    name: str
    status: str
    unit: str
    variants: tuple[Variant, ...]
    started_at: str | None = None
    stopped_at: str | None = None
    description: str = ""
    # Cumulative basis points per variant (the last is 10,000): assignment bisects them.
    bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total, bounds = 0, []
        for variant in self.variants:
            total += variant.share_bp
            bounds.append(total)
        object.__setattr__(self, "bounds", tuple(bounds))

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "unit": self.unit}
        if self.description:
            out["description"] = self.description
        out["variants"] = [v.to_json() for v in self.variants]
        out["started_at"], out["stopped_at"] = self.started_at, self.stopped_at
        return out


@dataclass(frozen=True)
class ExperimentSet:
    """The whole document: every experiment, at most one running, and the version counter the CLI increments."""

    version: int = 0
    experiments: tuple[ExperimentConfig, ...] = ()

    @property
    def running(self) -> ExperimentConfig | None:
        return next((e for e in self.experiments if e.running), None)

    def find(self, name: str) -> ExperimentConfig | None:
        return next((e for e in self.experiments if e.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "experiments": [e.to_json() for e in self.experiments]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------- parsing


def parse_config(text: str | bytes, available_versions: set[str] | None = None) -> ExperimentSet:
    """The stored JSON text -> the checked document; ExperimentConfigError for bad JSON or a broken rule."""
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ExperimentConfigError(f"the experiments configuration is not JSON: {e}") from e
    return validate(document, available_versions)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def validate(config: Any, available_versions: set[str] | None = None) -> ExperimentSet:
    """The document (parsed JSON) checked against every rule of this module's docstring."""
    if not isinstance(config, Mapping):
        raise ExperimentConfigError(f"the experiments configuration must be a JSON object, got {_kind(config)}")
    _only(config, frozenset({"version", "experiments"}), "the experiments configuration")
    version = config.get("version", 0)
    if not _is_int(version) or version < 0:
        raise ExperimentConfigError(f"version must be an integer >= 0, got {version!r}")
    items = config.get("experiments", [])
    if not isinstance(items, list):
        raise ExperimentConfigError(f"experiments must be a list, got {_kind(items)}")
    if len(items) > MAX_EXPERIMENTS:
        raise ExperimentConfigError(f"at most {MAX_EXPERIMENTS} experiments, got {len(items)}")
    experiments = tuple(parse_experiment(item, available_versions, index=i) for i, item in enumerate(items))
    _unique([e.name for e in experiments], "experiment")
    running = [e.name for e in experiments if e.running]
    if len(running) > 1:
        raise ExperimentConfigError(
            f"at most one experiment may run at a time, {len(running)} are: {', '.join(running)} (stop all but one)"
        )
    return ExperimentSet(version, experiments)


def parse_experiment(item: Any, available_versions: set[str] | None = None, index: int = 0) -> ExperimentConfig:
    """One experiment object; model versions are checked against ``available_versions`` only if it runs."""
    if not isinstance(item, Mapping):
        raise ExperimentConfigError(f"experiments[{index}] must be an object, got {_kind(item)}")
    name = _check_name(item.get("name"), f"experiments[{index}]")
    where = f"experiment {name!r}"
    _only(item, EXPERIMENT_KEYS, where)
    status = item.get("status", RUNNING)
    if status not in STATUSES:
        raise ExperimentConfigError(f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    unit = item.get("unit", "visitor")
    if unit not in UNITS:
        raise ExperimentConfigError(f"{where}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    started_at, stopped_at = (_timestamp(item.get(key), f"{where}: {key}") for key in ("started_at", "stopped_at"))
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise ExperimentConfigError(f"{where}: description must be text of at most {MAX_DESCRIPTION_CHARS} characters")
    raw_variants = item.get("variants")
    if not isinstance(raw_variants, list) or not MIN_VARIANTS <= len(raw_variants) <= MAX_VARIANTS:
        got = len(raw_variants) if isinstance(raw_variants, list) else _kind(raw_variants)
        raise ExperimentConfigError(f"{where}: variants must be a list of {MIN_VARIANTS} to {MAX_VARIANTS}, got {got}")
    versions = available_versions if status == RUNNING else None
    variants = tuple(_variant(v, versions, where, i) for i, v in enumerate(raw_variants))
    _unique([v.name for v in variants], f"{where}: variant")
    total = sum(v.share_bp for v in variants)
    if total != BASIS_POINTS:
        shares = " + ".join(str(v.share) for v in variants)
        raise ExperimentConfigError(f"{where}: shares must sum to exactly 100, got {shares} = {total / 100:g}")
    return ExperimentConfig(name, status, unit, variants, started_at, stopped_at, description)


def _variant(item: Any, available_versions: set[str] | None, experiment: str, index: int) -> Variant:
    if not isinstance(item, Mapping):
        raise ExperimentConfigError(f"{experiment}: variants[{index}] must be an object, got {_kind(item)}")
    name = _check_name(item.get("name"), f"{experiment}: variants[{index}]")
    where = f"{experiment}, variant {name!r}"
    _only(item, VARIANT_KEYS, where)
    holdout = item.get("holdout", False)
    if not isinstance(holdout, bool):
        raise ExperimentConfigError(f"{where}: holdout must be true or false, got {holdout!r}")
    options = item.get("options", {})
    if holdout and options:
        raise ExperimentConfigError(f"{where}: a holdout variant is served popular items only: it takes no options")
    return Variant(name, _share(item.get("share"), where), check_options(options, available_versions, where), holdout)


def _share(value: Any, where: str) -> int:
    """Percent -> basis points, exactly: 33.33 -> 3333; more than 2 decimals, <= 0 or not a number refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExperimentConfigError(f"{where}: share must be a number of percent, got {value!r}")
    try:
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as e:
        raise ExperimentConfigError(f"{where}: share must be a number of percent, got {value!r}") from e
    if not exact.is_finite() or exact <= 0 or exact > 100:
        raise ExperimentConfigError(f"{where}: share must be > 0 and <= 100, got {value!r}")
    basis = exact * 100
    if basis != basis.to_integral_value():
        raise ExperimentConfigError(f"{where}: share has more than 2 decimals: {value!r}")
    return int(basis)


def check_options(options: Any, available_versions: set[str] | None, where: str) -> Mapping[str, Any]:
    """A variant's options checked as a request's are (no catalogue needed) -> a read-only copy."""
    if not isinstance(options, Mapping):
        raise ExperimentConfigError(f"{where}: options must be an object, got {_kind(options)}")
    _only(options, OPTION_KEYS, f"{where}: options")
    out: dict[str, Any] = {}
    for key, value in options.items():
        at = f"{where}: options.{key}"
        if key in ("skip_ranking", "filter_strict"):
            if not isinstance(value, bool):
                raise ExperimentConfigError(f"{at} must be true or false, got {value!r}")
        elif key == "candidate_count":
            if not _is_int(value) or not 1 <= value <= MAX_CANDIDATE_COUNT:
                raise ExperimentConfigError(f"{at} must be an integer from 1 to {MAX_CANDIDATE_COUNT}, got {value!r}")
        elif key == "sources":
            _recipe(value, at)
        elif key == "filter":
            _expression(value, at)
        elif key == "boosts":
            value = tuple(_boosts(value, at))
        elif key == "diversity":
            value = _diversity(value, at)
        elif key == "model_version":
            _model_version(value, available_versions, at)
        out[key] = value
    return MappingProxyType(out)


def _recipe(value: Any, at: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_RECIPE_CHARS:
        raise ExperimentConfigError(f"{at} must be a recipe of at most {MAX_RECIPE_CHARS} characters, got {value!r}")
    try:
        parse_recipe(value)
    except RecipeError as e:
        raise ExperimentConfigError(f"{at}: {e}") from e


def _expression(value: Any, at: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ExperimentConfigError(f"{at} must be a non-empty filter expression, got {value!r}")
    try:
        parse_expression(value)
    except ExpressionError as e:
        raise ExperimentConfigError(f"{at}: {e}") from e


def _boosts(value: Any, at: str) -> Iterable[Mapping[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_BOOSTS:
        raise ExperimentConfigError(f"{at} must be a list of at most {MAX_BOOSTS} boosts")
    for i, boost in enumerate(value):
        where = f"{at}[{i}]"
        if not isinstance(boost, Mapping):
            raise ExperimentConfigError(f"{where} must be an object, got {_kind(boost)}")
        _only(boost, BOOST_KEYS, where)
        if "filter" not in boost:
            raise ExperimentConfigError(f"{where}.filter is required")
        _expression(boost["filter"], f"{where}.filter")
        for key, low in (("multiply", 0.0), ("add", -MAX_SCORE)):
            number = boost.get(key, 0.0)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ExperimentConfigError(f"{where}.{key} must be a number, got {number!r}")
            if not math.isfinite(number) or not low <= number <= MAX_SCORE:
                raise ExperimentConfigError(f"{where}.{key} must be a finite number >= {low:g}, got {number!r}")
        include = boost.get("include", 0)
        if not _is_int(include) or not 0 <= include <= MAX_BOOST_INCLUDE:
            raise ExperimentConfigError(f"{where}.include must be an integer from 0 to {MAX_BOOST_INCLUDE}")
        name = boost.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_BOOST_NAME_CHARS:
            raise ExperimentConfigError(f"{where}.name must be text of at most {MAX_BOOST_NAME_CHARS} characters")
        yield MappingProxyType(dict(boost))


def _diversity(value: Any, at: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ExperimentConfigError(f"{at} must be an object with attribute and max_per_value")
    _only(value, DIVERSITY_KEYS, at)
    attribute, cap = value.get("attribute"), value.get("max_per_value")
    if not isinstance(attribute, str) or not attribute:
        raise ExperimentConfigError(f"{at}.attribute must be an attribute name, got {attribute!r}")
    if not _is_int(cap) or cap < 1:
        raise ExperimentConfigError(f"{at}.max_per_value must be an integer >= 1, got {cap!r}")
    return MappingProxyType(dict(value))


def _model_version(value: Any, available_versions: set[str] | None, at: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_VERSION_LEN:
        raise ExperimentConfigError(f"{at} must be a model version of at most {MAX_VERSION_LEN} characters")
    if available_versions is not None and value not in available_versions:
        have = ", ".join(sorted(available_versions)[-5:]) or "none"
        raise ExperimentConfigError(f"{at}: version {value!r} is not available (available: {have})")


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ExperimentConfigError(f"{where}: name must match [a-z0-9_-]{{1,32}}, got {name!r}")
    return name


def _timestamp(value: Any, where: str) -> str | None:
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError) as e:
        raise ExperimentConfigError(f"{where} must be an ISO 8601 time or null, got {value!r}") from e
    return str(value)


def _only(mapping: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ExperimentConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            if len(unknown) == 1
            else f"{where}: unknown keys {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})"
        )


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ExperimentConfigError(f"{what} name {name!r} appears twice")
        seen.add(name)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", type(None): "null"}.get(type(value), type(value).__name__)


def plain(value: Any) -> Any:
    """Read-only options back to JSON values (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------- serving


def merge_options(request_options: Mapping[str, Any], variant_options: Mapping[str, Any]) -> dict[str, Any]:
    """A request's options (REST names) with its variant's: the variant's keys win, except ``filter`` (both must
    hold: ``(request) and (variant)``) and ``boosts`` (the request's, then the variant's). A new dict: neither
    argument is changed, and nothing of the shared variant options is handed out mutable."""
    merged = dict(request_options)
    for key, value in variant_options.items():
        if key == "filter":
            mine = request_options.get("filter")
            merged["filter"] = f"({mine}) and ({value})" if mine else value
        elif key == "boosts":
            merged["boosts"] = [*(request_options.get("boosts") or ()), *plain(value)]
        else:
            merged[key] = plain(value)
    return merged


# ---------------------------------------------------------------------------------------------------- edits


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_experiment(
    current: ExperimentSet, item: Any, now: str, available_versions: set[str] | None = None
) -> ExperimentSet:
    """``current`` with the experiment ``item`` (a file's object: name, unit, variants, description) running
    from ``now``, version + 1. Refused while another runs, or if the name was used before (its counts are
    kept for the report: a new run needs a new name)."""
    if not isinstance(item, Mapping):
        raise ExperimentConfigError(f"an experiment must be a JSON object, got {_kind(item)}")
    given = [key for key in SET_BY_COMMANDS if key in item]
    if given:
        raise ExperimentConfigError(f"{', '.join(given)}: set by `recmesh experiments start/stop`, not by the file")
    running = current.running
    if running is not None:
        raise ExperimentConfigError(
            f"experiment {running.name!r} is running: stop it first (`recmesh experiments stop {running.name}`)"
        )
    experiment = parse_experiment({**item, "status": RUNNING, "started_at": now}, available_versions)
    if current.find(experiment.name) is not None:
        raise ExperimentConfigError(
            f"experiment {experiment.name!r} exists already (its counts are kept): give the new one another name"
        )
    return ExperimentSet(current.version + 1, (*current.experiments, experiment))


def stop_experiment(current: ExperimentSet, name: str, now: str) -> ExperimentSet:
    """``current`` with ``name`` stopped at ``now`` (nobody is assigned any more; counts stay), version + 1."""
    experiment = current.find(name)
    if experiment is None:
        known = ", ".join(e.name for e in current.experiments) or "none"
        raise ExperimentConfigError(f"no experiment named {name!r} (experiments: {known})")
    if not experiment.running:
        raise ExperimentConfigError(f"experiment {name!r} is already stopped (at {experiment.stopped_at})")
    stopped = replace(experiment, status=STOPPED, stopped_at=now)
    return ExperimentSet(current.version + 1, tuple(stopped if e.name == name else e for e in current.experiments))
