"""Per-request rules that reorder a ranked answer: boosts and buries, diversity caps, MMR, and pins.

Pure numpy over the ranked list: every array a rule carries (a boost's mask, the diversity codes, the MMR vectors)
is aligned with ``Ranked.item_ids`` as given, whatever the earlier steps did to the order. Building the masks from
filter expressions (``recmesh.catalog.expressions``: ``expr.mask_rows(catalog, ranked.rows)``) and the codes from
the catalogue (:func:`attribute_codes`) is the caller's job, so this module never reads the catalogue while it
reorders.

The steps, in this order (:func:`apply`):

1. **Boosts**, one rule after another: matching items get ``score * multiply + add`` (a bury: ``multiply < 1`` or
   ``add < 0``) and the whole list is re-sorted by score, stably (ties keep the order they had). Multiplying is
   meant for non-negative scores (the ranker's probabilities); on negative scores use ``add``. The re-sort is by
   score, so a list not sorted by its scores (the ranking service's no-model fallback keeps the given order) comes
   out sorted by them once any boost applies.
2. **MMR** (if asked), then the **diversity cap** (if asked): MMR is a soft reorder, the cap a hard limit, so the
   cap goes last and holds over what MMR chose.
3. **Pins**: each pinned item sits at exactly its position (taken out of its old place, or inserted with score
   NaN, "not scored", if it was not in the list). Pins win over the cap.
4. Cut to ``k``.

``moved_by[i]`` names the steps that acted on item ``i`` and changed its position: a boost rule whose mask matched
it, ``"mmr"`` for an item MMR placed elsewhere than the score order did, ``"diversity"`` for an item the cap pushed
down, and ``"pin"`` for every pinned item. Items that only shifted because others moved past them carry nothing.

Usage::

    ranked = Ranked(["a", "b", "c", "d"], np.array([0.9, 0.8, 0.7, 0.6]))
    plan = RerankPlan(
        boosts=[Boost(np.array([False, False, True, False]), multiply=2.0, name="sale")],
        diversity=Diversity(codes=np.array([0, 0, 1, -1]), max_per_value=1),
        pins=[("z", 0)],
    )
    out = apply(ranked, plan, k=3)  # out.item_ids == ["z", "c", "a"]; out.moved_by[0] == ["pin"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import numpy as np

from recmesh.catalog.table import Catalog

RESERVED_NAMES = ("pin", "diversity", "mmr")  # moved_by's own step names: no boost rule may take them
Pin = tuple[str, int]  # (item id, 0-based position in the top k)


@dataclass(frozen=True)
class Ranked:
    """A ranked list, best first. ``rows``: the items' catalogue rows (-1 = not in the catalogue), for the caller
    to compute masks with; the rules themselves never read it."""

    item_ids: Sequence[str]
    scores: np.ndarray
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if scores.size != len(self.item_ids):
            raise ValueError(f"{len(self.item_ids)} items but {scores.size} scores (one per item)")
        if not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise ValueError(f"score {bad} ({self.item_ids[bad]!r}) is not a finite number")
        if len(set(self.item_ids)) != len(self.item_ids):
            seen: set[str] = set()
            for item_id in self.item_ids:
                if item_id in seen:
                    raise ValueError(f"the ranked list holds item {item_id!r} more than once")
                seen.add(item_id)
        if self.rows is not None and np.shape(self.rows) != (scores.size,):
            raise ValueError(f"{len(self.item_ids)} items but rows of shape {np.shape(self.rows)}")
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class Boost:
    """``score * multiply + add`` for the items where ``mask`` is true (mask aligned with the ranked list)."""

    mask: np.ndarray
    _: KW_ONLY
    name: str
    multiply: float = 1.0
    add: float = 0.0

    def check(self, n: int) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a boost rule needs a non-empty name, got {self.name!r}")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"boost rule name {self.name!r} is reserved ({', '.join(RESERVED_NAMES)})")
        mask = np.asarray(self.mask)
        if mask.dtype != np.bool_ or mask.shape != (n,):
            raise ValueError(f"rule {self.name!r}: mask must be {n} booleans, got {mask.dtype} of shape {mask.shape}")
        for what, value in (("multiply", self.multiply), ("add", self.add)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                raise ValueError(f"rule {self.name!r}: {what} must be a finite number, got {value!r}")
        # A negative factor would turn the matching items' order upside down: never what a boost means.
        if self.multiply < 0:
            raise ValueError(f"rule {self.name!r}: multiply must be >= 0, got {self.multiply!r}")


@dataclass(frozen=True)
class Diversity:
    """At most ``max_per_value`` items per attribute value in the top k. ``codes``: one int per item (aligned with
    the ranked list), the same code for the same value; a negative code = the item has no value, and each such item
    is its own group (never capped: two items without a brand are not "the same brand")."""

    codes: np.ndarray
    max_per_value: int


@dataclass(frozen=True)
class Mmr:
    """Maximal marginal relevance. ``vectors``: (n, d) unit rows aligned with the ranked list, a zero row for an
    item without a vector (similarity 0 to everything), or None (no similarities: the score order). ``lam``:
    1 = relevance only (order unchanged), 0 = novelty only."""

    vectors: np.ndarray | None
    lam: float


@dataclass(frozen=True)
class RerankPlan:
    boosts: Sequence[Boost] = ()
    diversity: Diversity | None = None
    mmr: Mmr | None = None
    pins: Sequence[Pin] = ()


@dataclass
class Reranked:
    """The top k after the rules. ``scores``: after the boosts; NaN for a pinned item that was not in the list.
    ``diversity_relaxed``: the cap could not fill the top k, so its last places hold the best remaining items
    regardless of the cap."""

    item_ids: list[str]
    scores: np.ndarray
    moved_by: list[list[str]]
    diversity_relaxed: bool = False


def check_pins(pins: Sequence[Pin], k: int) -> None:
    """ValueError naming the first bad pin: not (item id, position), a position outside 0..k-1, or an item or a
    position pinned twice."""
    _check_k(k)
    items: set[str] = set()
    positions: set[int] = set()
    for i, pin in enumerate(pins):
        if not isinstance(pin, tuple | list) or len(pin) != 2:
            raise ValueError(f"pins[{i}]: expected (item id, position), got {pin!r}")
        item_id, position = pin
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"pins[{i}]: the item id must be a non-empty string, got {item_id!r}")
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < k:
            raise ValueError(f"pins[{i}] ({item_id!r}): position must be an integer in 0..{k - 1}, got {position!r}")
        if item_id in items:
            raise ValueError(f"pins[{i}]: item {item_id!r} is pinned twice")
        if position in positions:
            raise ValueError(f"pins[{i}] ({item_id!r}): position {position} is pinned twice")
        items.add(item_id)
        positions.add(position)


def check_plan(plan: RerankPlan, n: int, k: int) -> None:
    """ValueError naming the first bad part of the plan for a list of n items cut to k."""
    check_pins(plan.pins, k)
    names: set[str] = set()
    for boost in plan.boosts:
        boost.check(n)
        if boost.name in names:
            raise ValueError(f"two boost rules are named {boost.name!r}")
        names.add(boost.name)
    if plan.diversity is not None:
        _check_diversity(plan.diversity, n)
    if plan.mmr is not None:
        _check_mmr(plan.mmr, n)


def apply(ranked: Ranked, plan: RerankPlan, k: int) -> Reranked:
    """The top k of ``ranked`` after the plan's boosts, MMR, diversity cap and pins (module docstring)."""
    n = len(ranked)
    check_plan(plan, n, k)
    moved_by: list[list[str]] = [[] for _ in range(n)]
    order = np.arange(n)  # the current list, as indices into ranked
    scores = ranked.scores.copy()  # aligned with ranked, not with order
    for boost in plan.boosts:
        scores, new_order = apply_boost(scores, order, boost)
        _record(moved_by, order, new_order, boost.name, np.asarray(boost.mask))
        order = new_order
    if plan.mmr is not None:
        vectors = None if plan.mmr.vectors is None else np.asarray(plan.mmr.vectors)[order]
        new_order = order[mmr(scores[order], vectors, plan.mmr.lam, k)]
        _record(moved_by, order, new_order, "mmr", None)
        order = new_order
    relaxed = False
    if plan.diversity is not None:
        codes = np.asarray(plan.diversity.codes)
        positions, relaxed = max_per_value(codes[order], plan.diversity.max_per_value, k)
        new_order = order[positions]
        _record(moved_by, order, new_order, "diversity", ~_within_cap(codes, plan.diversity.max_per_value, order))
        order = new_order
    return _place_pins(ranked, scores, order, moved_by, plan.pins, k, relaxed)


def apply_boost(scores: np.ndarray, order: np.ndarray, boost: Boost) -> tuple[np.ndarray, np.ndarray]:
    """(new scores aligned with the ranked list, new order): ``order`` re-sorted by the boosted scores, stably."""
    mask = np.asarray(boost.mask)
    boosted = scores.copy()
    with np.errstate(over="ignore"):  # an overflow is reported below, by name
        boosted[mask] = scores[mask] * boost.multiply + boost.add
    if not np.isfinite(boosted).all():
        raise ValueError(f"rule {boost.name!r}: the boosted scores overflow")
    # argsort of the negated scores, stable: descending, and equal scores keep their current order
    return boosted, order[np.argsort(-boosted[order], kind="stable")]


def max_per_value(codes: np.ndarray, n: int, k: int) -> tuple[np.ndarray, bool]:
    """(positions, relaxed): a reordering of the list (``codes`` in list order) such that the top k hold at most n
    items per code (negative codes uncapped), taken greedily best first; items pushed out follow in their order.
    When too few items fit the cap to fill the top k, the best remaining fill its last places and ``relaxed`` is
    True. The greedy pass keeps the most items any order could, so the cap holds whenever it can."""
    codes = np.asarray(codes)
    eligible = _first_n_per_code(codes, n)
    fits = np.flatnonzero(eligible)[:k]
    rest_mask = np.ones(codes.size, dtype=bool)
    rest_mask[fits] = False
    rest = np.flatnonzero(rest_mask)
    relaxed = fits.size < min(k, codes.size)
    return np.concatenate([fits, rest]), relaxed


def mmr(scores: np.ndarray, vectors: np.ndarray | None, lam: float, k: int) -> np.ndarray:
    """Positions (a permutation of the list): k items chosen greedily by ``lam * relevance - (1 - lam) * max
    similarity to those already chosen`` (relevance: scores min-max normalised to [0, 1]; all 1 if equal), then
    the rest in their order. ``lam == 1`` returns the order unchanged, sorted by score or not."""
    size = scores.size
    if lam == 1.0 or size == 0:
        return np.arange(size)
    spread = float(scores.max() - scores.min())
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones(size)
    chosen: list[int] = []
    taken = np.zeros(size, dtype=bool)
    closest = np.zeros(size)  # max similarity to the chosen; 0 before the first pick
    for step in range(min(k, size)):
        gain = lam * relevance - (1.0 - lam) * closest
        gain[taken] = -np.inf
        best = int(np.argmax(gain))  # first of equal gains: the better-ranked one
        chosen.append(best)
        taken[best] = True
        if vectors is not None:
            similarity = vectors @ vectors[best]
            closest = similarity if step == 0 else np.maximum(closest, similarity)
    return np.concatenate([np.array(chosen, dtype=np.int64), np.flatnonzero(~taken)])


def attribute_codes(catalog: Catalog, rows: np.ndarray, name: str) -> np.ndarray:
    """int64 codes of attribute ``name`` for the given catalogue rows, for :class:`Diversity`: equal values, equal
    codes; -1 where the item is not in the catalogue (row -1) or has no value. ValueError if no item has it."""
    column = catalog.columns.get(name)
    if column is None:
        raise ValueError(f"no item in the catalogue has the attribute {name!r}")
    rows = np.asarray(rows, dtype=np.int64)
    known = rows >= 0
    safe = np.where(known, rows, 0)
    present = known & column.present[safe]
    codes = np.full(rows.size, -1, dtype=np.int64)
    if column.type == "string":
        codes[present] = column.values[safe[present]]
    elif present.any():  # numbers and booleans: a code per distinct value
        codes[present] = np.unique(column.values[safe[present]], return_inverse=True)[1]
    return codes


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _check_diversity(diversity: Diversity, n: int) -> None:
    codes = np.asarray(diversity.codes)
    if codes.shape != (n,) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"diversity: codes must be {n} integers, got {codes.dtype} of shape {codes.shape}")
    cap = diversity.max_per_value
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"diversity: max_per_value must be a positive integer, got {cap!r}")


def _check_mmr(plan: Mmr, n: int) -> None:
    if isinstance(plan.lam, bool) or not isinstance(plan.lam, int | float) or not 0.0 <= plan.lam <= 1.0:
        raise ValueError(f"mmr: lambda must be a number in [0, 1], got {plan.lam!r}")
    if plan.vectors is None:
        return
    vectors = np.asarray(plan.vectors)
    if vectors.ndim != 2 or vectors.shape[0] != n or not np.issubdtype(vectors.dtype, np.floating):
        raise ValueError(f"mmr: vectors must be {n} float rows, got {vectors.dtype} of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("mmr: vectors must be finite")


def _first_n_per_code(codes: np.ndarray, n: int) -> np.ndarray:
    """True where the item is among the first n of its code in list order (always for negative codes)."""
    by_code = np.argsort(codes, kind="stable")  # grouped by code, list order within a group
    sorted_codes = codes[by_code]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if codes.size else np.array([], int)
    group_start = np.repeat(starts, np.diff(np.r_[starts, codes.size]))
    rank_in_group = np.empty(codes.size, dtype=np.int64)
    rank_in_group[by_code] = np.arange(codes.size) - group_start
    return (codes < 0) | (rank_in_group < n)


def _within_cap(codes: np.ndarray, n: int, order: np.ndarray) -> np.ndarray:
    """Aligned with the ranked list: whether the item fits the cap in ``order``."""
    fits = np.empty(order.size, dtype=bool)
    fits[order] = _first_n_per_code(codes[order], n)
    return fits


def _record(
    moved_by: list[list[str]], before: np.ndarray, after: np.ndarray, step: str, acted: np.ndarray | None
) -> None:
    """Add ``step`` to the items it acted on (``acted``, aligned with the ranked list; None = all) whose position
    changed from ``before`` to ``after``."""
    position_before = np.empty(before.size, dtype=np.int64)
    position_before[before] = np.arange(before.size)
    position_after = np.empty(after.size, dtype=np.int64)
    position_after[after] = np.arange(after.size)
    changed = position_before != position_after
    if acted is not None:
        changed &= acted
    for i in np.flatnonzero(changed).tolist():
        moved_by[i].append(step)


def _place_pins(
    ranked: Ranked,
    scores: np.ndarray,
    order: np.ndarray,
    moved_by: list[list[str]],
    pins: Sequence[Pin],
    k: int,
    relaxed: bool,
) -> Reranked:
    """Cut to k with each pinned item at its position. A list too short to reach a pin's position puts the pinned
    item at its end, as close as it can."""
    index_of = {item_id: i for i, item_id in enumerate(ranked.item_ids)}
    pinned_at = {position: item_id for item_id, position in pins}
    pinned_rows = {index_of[item_id] for item_id, _ in pins if item_id in index_of}
    rest = iter(i for i in order.tolist() if i not in pinned_rows)
    ids: list[str] = []
    out_scores: list[float] = []
    out_moved: list[list[str]] = []
    while len(ids) < k:
        pinned = pinned_at.get(len(ids))
        if pinned is None:
            index = next(rest, None)
            if index is None:  # the list ran out: the pins still to come go next, in position order
                for position in sorted(p for p in pinned_at if p > len(ids)):
                    _append_pinned(pinned_at[position], index_of, scores, moved_by, ids, out_scores, out_moved)
                break
            ids.append(ranked.item_ids[index])
            out_scores.append(float(scores[index]))
            out_moved.append(moved_by[index])
        else:
            _append_pinned(pinned, index_of, scores, moved_by, ids, out_scores, out_moved)
    return Reranked(ids, np.array(out_scores, dtype=np.float64), out_moved, relaxed)


def _append_pinned(
    item_id: str,
    index_of: dict[str, int],
    scores: np.ndarray,
    moved_by: list[list[str]],
    ids: list[str],
    out_scores: list[float],
    out_moved: list[list[str]],
) -> None:
    index = index_of.get(item_id)
    ids.append(item_id)
    out_scores.append(float("nan") if index is None else float(scores[index]))
    out_moved.append([*([] if index is None else moved_by[index]), "pin"])
