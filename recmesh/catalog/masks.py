"""Which of a model's items may be recommended under a catalogue: the request's filter passed, and never an item
whose ``available`` attribute is false. The one definition the candidate-generation service (which caches it) and
the offline pipeline share, so a filtered served answer equals the offline one.

Usage::

    allowed = allowed_items(catalog, model.item_ids, compile_expression(text, catalog.schema))
    model.recommend(history, k=10, allowed=allowed)   # None: every item allowed
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recmesh.catalog.expressions import Expression
from recmesh.catalog.table import Catalog

AVAILABLE = "available"  # the attribute that hides an item from every answer when false


def unavailable_rows(catalog: Catalog, rows: np.ndarray) -> np.ndarray:
    """Bool per given catalogue row (-1: no entry, never unavailable): marked ``available: false``."""
    column = catalog.columns.get(AVAILABLE)
    if column is None or column.type != "boolean":
        return np.zeros(rows.size, dtype=bool)
    safe = np.where(rows >= 0, rows, 0)
    return np.asarray((rows >= 0) & column.present[safe] & ~column.values[safe].astype(bool))


def allowed_ids(catalog: Catalog, item_ids: Sequence[str], expression: Expression | None = None) -> np.ndarray:
    """`allowed_items` for a few ids (a page of popular items, a boost's includes) without a whole-catalogue mask."""
    rows = catalog.rows_of(item_ids)
    ok = np.ones(len(item_ids), dtype=bool)
    if expression is not None:
        ok &= expression.mask_rows(catalog, rows)
        if expression.matches({}):  # what an item without attributes passes, an item without an entry passes
            ok |= rows < 0
    return ok & ~unavailable_rows(catalog, rows)


def unavailable(catalog: Catalog) -> np.ndarray | None:
    """Bool per catalogue row: marked ``available: false``; None when no item is."""
    hidden = unavailable_rows(catalog, np.arange(len(catalog)))
    return hidden if hidden.any() else None


def allowed_items(
    catalog: Catalog,
    item_ids: Sequence[str],
    expression: Expression | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray | None:
    """Bool per item of ``item_ids`` (a model's rows): passes ``expression`` and is not unavailable. An item without
    a catalogue entry passes what an item without attributes passes. None when every item is allowed (then the
    sources skip the mask and answers are the unfiltered pipeline's, bit for bit). ``rows``: the catalogue row of
    each item, if the caller has them (``catalog.rows_of(item_ids)``)."""
    rows = catalog.rows_of(item_ids) if rows is None else rows
    passing = np.ones(len(catalog), dtype=bool) if expression is None else expression.mask(catalog)
    hidden = unavailable(catalog)
    if hidden is not None:
        passing = passing & ~hidden
    outside = True if expression is None else expression.matches({})
    if outside and passing.all():
        return None
    known = rows >= 0
    allowed = np.full(len(item_ids), outside, dtype=bool)
    allowed[known] = passing[rows[known]]
    return allowed
