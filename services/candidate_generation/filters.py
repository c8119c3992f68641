"""Which of a model's items a request may return (recmesh.catalog.masks: its filter over the live catalogue, and
never an item marked ``available: false``), cached per model version, catalogue state and filter until the
catalogue changes, so a repeated filter costs a dictionary lookup, not a pass over the catalogue.

Usage::

    filters = ModelFilters()
    allowed = filters.allowed(model, catalog, 'category == "shoes" and price < 50')  # bool per model row, or None
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from recmesh.catalog.masks import allowed_items
from recmesh.catalog.table import Catalog
from recmesh.pipeline import Model
from serving.filters import compile_filter

CACHED_MASKS = 256


class ModelFilters:
    """Masks over model rows for (model version, catalogue state, filter text)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], tuple[int, np.ndarray]] = {}  # (version, catalogue) -> (len, rows)
        self._masks: OrderedDict[tuple[str, int, int, str], np.ndarray | None] = OrderedDict()

    def allowed(self, model: Model, catalog: Catalog, text: str = "") -> np.ndarray | None:
        """Bool per model row: passes `text` (every row when empty) and is not unavailable; None when every row
        is allowed (the sources then skip the mask entirely, and answers equal the unfiltered pipeline's).
        InvalidArgument naming the problem for a filter this catalogue cannot evaluate."""
        key = (model.version, id(catalog), catalog.changes, text)
        if key in self._masks:
            self._masks.move_to_end(key)
            return self._masks[key]
        mask = self._compute(model, catalog, text)
        self._masks[key] = mask
        while len(self._masks) > CACHED_MASKS:
            self._masks.popitem(last=False)
        return mask

    def _compute(self, model: Model, catalog: Catalog, text: str) -> np.ndarray | None:
        expression = compile_filter(text, catalog, "filter") if text else None
        return allowed_items(catalog, model.item_ids, expression, self._catalog_rows(model, catalog))

    def _catalog_rows(self, model: Model, catalog: Catalog) -> np.ndarray:
        """The catalogue row of each model row (-1 = no entry); recomputed when items were added."""
        key = (model.version, id(catalog))
        cached = self._rows.get(key)
        if cached is None or cached[0] != len(catalog):
            if len(self._rows) > 8:  # versions and catalogue reloads come and go
                self._rows.clear()
            cached = self._rows[key] = (len(catalog), catalog.rows_of(model.item_ids))
        return cached[1]
