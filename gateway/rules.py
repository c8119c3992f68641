"""A recommendation's catalogue options: the filter, boosts, pins and diversity, checked and applied.

Checked in two steps, both before any hop: :func:`check_rules` needs nothing (counts, ranges, syntax), and
:func:`compile_rules` checks every expression and attribute against the live catalogue's schema (an unknown
attribute or a wrong type is a 400 / INVALID_ARGUMENT naming the position). After ranking, :meth:`Rules.apply`
reorders the ranked pool with recmesh.catalog.rerank (boosts, then the diversity cap, then pins, then the cut to
k). The filter itself runs inside candidate generation; the gateway applies it only to what it serves alone
(popular items for an empty session, and a boost's ``include``).

    check_rules(options, k)                        # no catalogue needed
    rules = compile_rules(catalog, options)         # after the catalogue refresh
    reranked = rules.apply(catalog, item_ids, scores, k)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recmesh.catalog import rerank
from recmesh.catalog.expressions import Expression
from recmesh.catalog.masks import allowed_ids
from recmesh.catalog.table import Catalog
from serving import limits
from serving.errors import InvalidArgument
from serving.filters import check_syntax, compile_filter


@dataclass(frozen=True)
class BoostRule:
    filter: str
    multiply: float = 1.0
    add: float = 0.0
    include: int = 0  # add up to this many catalogue items that pass `filter` and no source found
    name: str = ""


@dataclass(frozen=True)
class PinRule:
    item_id: str
    position: int  # 1 = first


@dataclass(frozen=True)
class DiversityRule:
    attribute: str
    max_per_value: int


@dataclass(frozen=True)
class RuleOptions:
    """The catalogue part of a recommendation's options."""

    filter: str = ""
    filter_strict: bool = False
    boosts: Sequence[BoostRule] = ()
    pins: Sequence[PinRule] = ()
    diversity: DiversityRule | None = None

    @property
    def any(self) -> bool:
        return bool(self.filter or self.boosts or self.pins or self.diversity)

    @property
    def reorders(self) -> bool:
        """Whether the answer is reordered after ranking (the ranker must then return the whole pool)."""
        return bool(self.boosts or self.pins or self.diversity)


def check_rules(options: RuleOptions, k: int) -> None:
    """Everything that needs no catalogue: caps, ranges, names, each expression's length and syntax."""
    if options.filter:
        check_syntax(options.filter, "options.filter")
    if len(options.boosts) > limits.MAX_BOOSTS:
        raise InvalidArgument(f"at most {limits.MAX_BOOSTS} boosts, got {len(options.boosts)}", field="options.boosts")
    names: set[str] = set()
    for i, boost in enumerate(options.boosts):
        where = f"options.boosts[{i}]"
        if not boost.filter:
            raise InvalidArgument(f"{where}.filter must not be empty", field=f"{where}.filter")
        check_syntax(boost.filter, f"{where}.filter")
        for what, value in (("multiply", boost.multiply), ("add", boost.add)):
            if not np.isfinite(value) or abs(value) > limits.MAX_SCORE:
                raise InvalidArgument(f"{where}.{what} must be a finite number, got {value}", field=f"{where}.{what}")
        if boost.multiply < 0:
            raise InvalidArgument(f"{where}.multiply must be >= 0, got {boost.multiply}", field=f"{where}.multiply")
        if not 0 <= boost.include <= limits.MAX_BOOST_INCLUDE:
            raise InvalidArgument(
                f"{where}.include must be >= 0 and <= {limits.MAX_BOOST_INCLUDE}, got {boost.include}",
                field=f"{where}.include",
            )
        name = boost_name(boost, i)
        if name in rerank.RESERVED_NAMES or name in names or len(name) > 64:
            raise InvalidArgument(f"{where}.name {name!r} is reserved, repeated or too long", field=f"{where}.name")
        names.add(name)
    if len(options.pins) > k:
        raise InvalidArgument(f"at most k ({k}) pins, got {len(options.pins)}", field="options.pins")
    try:
        rerank.check_pins([(p.item_id, p.position - 1) for p in options.pins], k)
    except ValueError as e:
        raise InvalidArgument(f"options.{e} (positions count from 1)", field="options.pins") from e
    if options.diversity is not None and options.diversity.max_per_value < 1:
        raise InvalidArgument(
            f"options.diversity.max_per_value must be >= 1, got {options.diversity.max_per_value}",
            field="options.diversity.max_per_value",
        )


def boost_name(boost: BoostRule, index: int) -> str:
    return boost.name or f"boost{index}"


@dataclass(frozen=True)
class Rules:
    """The options compiled against one catalogue state."""

    options: RuleOptions
    filter: Expression | None
    boosts: list[tuple[str, BoostRule, Expression]] = field(default_factory=list)

    def passes(self, catalog: Catalog, item_ids: Sequence[str]) -> np.ndarray:
        """Bool per id: passes the filter (if any) and is not marked unavailable (as candidate generation's mask)."""
        return allowed_ids(catalog, item_ids, self.filter)

    def included(self, catalog: Catalog, present: set[str], exclude: set[str]) -> list[tuple[str, str]]:
        """(item id, rule name) of the catalogue items each boost's ``include`` adds: newest entries first, passing
        the rule's filter and the request's, not in the pool nor excluded."""
        added: list[tuple[str, str]] = []
        taken = present | exclude
        for name, boost, expression in self.boosts:
            if boost.include:
                newest_first = np.flatnonzero(expression.mask(catalog))[::-1]  # rows are append-only
                found = self._first_passing(catalog, newest_first, taken, boost.include)
                taken |= set(found)
                added += [(item, name) for item in found]
        return added

    def _first_passing(self, catalog: Catalog, rows: np.ndarray, taken: set[str], n: int) -> list[str]:
        found: list[str] = []
        chunk = 4 * n  # a few at a time: most pass, and the catalogue may be large
        for start in range(0, rows.size, chunk):
            ids = [catalog.ids[r] for r in rows[start : start + chunk].tolist()]
            ok = self.passes(catalog, ids)
            found += [item for item, passing in zip(ids, ok, strict=True) if passing and item not in taken]
            if len(found) >= n:
                break
        return found[:n]

    def apply(self, catalog: Catalog, item_ids: Sequence[str], scores: Sequence[float], k: int) -> rerank.Reranked:
        """The ranked pool's top k after the boosts, the diversity cap and the pins."""
        rows = catalog.rows_of(item_ids)
        boosts = [
            rerank.Boost(expression.mask_rows(catalog, rows), name=name, multiply=boost.multiply, add=boost.add)
            for name, boost, expression in self.boosts
        ]
        diversity = None
        if self.options.diversity is not None:
            codes = rerank.attribute_codes(catalog, rows, self.options.diversity.attribute)
            diversity = rerank.Diversity(codes, self.options.diversity.max_per_value)
        pins = [(p.item_id, p.position - 1) for p in self.options.pins]
        plan = rerank.RerankPlan(boosts=boosts, diversity=diversity, pins=pins)
        return rerank.apply(rerank.Ranked(list(item_ids), np.asarray(scores, dtype=np.float64)), plan, k)


def compile_rules(catalog: Catalog, options: RuleOptions) -> Rules:
    """The options checked against the catalogue's attributes: InvalidArgument for an unknown attribute or a type
    the expression cannot compare."""
    expression = compile_filter(options.filter, catalog, "options.filter") if options.filter else None
    boosts = [
        (boost_name(boost, i), boost, compile_filter(boost.filter, catalog, f"options.boosts[{i}].filter"))
        for i, boost in enumerate(options.boosts)
    ]
    if options.diversity is not None and options.diversity.attribute not in catalog.columns:
        known = ", ".join(sorted(catalog.columns)[:20]) or "none yet"
        raise InvalidArgument(
            f"options.diversity.attribute: no catalogue item has {options.diversity.attribute!r} (attributes: {known})",
            field="options.diversity.attribute",
        )
    return Rules(options, expression, boosts)
