"""The three stages as plain functions over one loaded bundle: query vector, candidates, ranking.

The gRPC services are thin adapters over this module and the offline evaluation calls it directly, so a served
recommendation equals the offline one for the same bundle and session. Candidates come from the bundle's sources
(recmesh/sources) mixed by a recipe: the request's, or the bundle's default (manifest ``sources.default_recipe``)::

    model = load_model(path)
    rows, probabilities = model.recommend(history, k=10, recipe=parse_recipe("ann:100,covisit:100"))
    rows, probabilities = model.recommend(history, k=10, allowed=mask)  # mask[row]: the item passes the filter

Every stage takes an optional ``allowed`` mask (bool per item row, None = every item): candidates, retrieval and
popularity then return only allowed rows, still k of them when k allowed items exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recmesh import bundle
from recmesh.index import AnnIndex, load_index, search_excluding
from recmesh.index.base import search_allowed
from recmesh.rank.features import ItemSpace, features
from recmesh.rank.model import Ranker
from recmesh.rank.tables import Csr, FeatureTables
from recmesh.sources import Session, Source, checked_mask
from recmesh.sources.ann import AnnSource
from recmesh.sources.covisit import CovisitParams, CovisitSource
from recmesh.sources.given import GivenSource
from recmesh.sources.popular import PopularSource
from recmesh.sources.recipe import Pool, Recipe, gather, parse_recipe
from recmesh.sources.slist import SlistParams, SlistSource

MAX_SESSION = 50  # a session longer than this is trimmed to its most recent items


def session_query(unit_vectors: np.ndarray, decay: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Recency-weighted sum of the session's unit item vectors (oldest first), L2-normalised.

    ``weights`` (one per row, > 0), when given, multiply the recency weights: the gateway passes the event-type
    weights of a visitor's history (a purchase counts more than a view). None, or all weights equal, gives the
    same query as no weights (a common factor cancels in the normalisation); the offline pipeline passes none.
    The gateway calls this on vectors from the embedding store; the offline pipeline on the bundle's.
    """
    recency = np.exp(-decay * np.arange(unit_vectors.shape[0], dtype=np.float32)[::-1])
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != recency.shape:
            raise ValueError(f"{weights.size} weights for {recency.shape[0]} session vectors")
        if weights.size and not np.all(weights == weights[0]):
            recency = recency * weights
    query = (unit_vectors * recency[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(query))
    return (query / norm if norm > 0 else query).astype(np.float32)


@dataclass
class Model:
    version: str
    manifest: dict[str, Any]
    item_ids: list[str]
    index_of: dict[str, int]
    space: ItemSpace
    index: AnnIndex
    ranker: Ranker
    # item_ids as an object array: `ids_of` turns a few hundred rows into ids in one take instead of a Python loop
    _item_array: np.ndarray = field(init=False, repr=False, compare=False)
    # the candidate sources this bundle can serve, by name (recmesh.sources)
    sources: dict[str, Source] = field(init=False, repr=False, compare=False)
    _popular: PopularSource = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._item_array = np.array(self.item_ids, dtype=object)
        # ann gets the index's space too: a filtered search scores the allowed rows exactly when they are few
        self.sources = {"ann": AnnSource(self.index, self.n_items, self.space.context_vectors)}
        if self.space.tables.covisits.indptr.size == self.n_items + 1:  # an old bundle may lack the tables
            self.sources["covisit"] = CovisitSource(self.space.tables, self.space.covisit)
        if self.space.slist is not None:  # a bundle trained before it, or over slist.MAX_ITEMS items, has none
            self.sources["slist"] = SlistSource(self.space.slist, self.space.slist_params)
        self._popular = PopularSource(self.space.tables.popularity)
        self.sources["popular"] = self._popular
        self.sources["given"] = GivenSource()

    @property
    def default_recipe(self) -> Recipe:
        """The manifest's recipe (chosen on validation targets at training), or ANN alone for an older bundle."""
        text = self.manifest.get("sources", {}).get("default_recipe")
        return self.recipe(text or f"ann:{int(self.manifest['params'].get('candidates', 200))}")

    def recipe(self, text: str) -> Recipe:
        """A recipe this bundle can serve; RecipeError (a ValueError) naming the problem otherwise."""
        return parse_recipe(text, self.sources)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.space.vectors.shape[1])

    @property
    def query_decay(self) -> float:
        return float(self.manifest["params"]["query_decay"])

    def ids_of(self, rows: np.ndarray) -> list[str]:
        """The item ids of `rows`, in order: `[item_ids[r] for r in rows]`."""
        ids: list[str] = self._item_array[rows].tolist()
        return ids

    def lookup(self, item_ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """Row indices of the known ids (in order) and the unknown ids."""
        known, unknown = [], []
        for item in item_ids:
            row = self.index_of.get(item)
            if row is None:
                unknown.append(item)
            else:
                known.append(row)
        return np.array(known, dtype=np.int64), unknown

    def recent_known(self, item_ids: Sequence[str], limit: int = MAX_SESSION) -> tuple[np.ndarray, list[str]]:
        """Rows of the most recent `limit` known items (oldest first, duplicates kept) and the unknown ids met
        collecting them (once each, first occurrence order): `lookup` then `[-limit:]`, as `recommend` trims a
        session, without looking up what the trim drops."""
        rows: list[int] = []
        unknown: list[str] = []
        for item in reversed(item_ids):
            row = self.index_of.get(item)
            if row is None:
                unknown.append(item)
            else:
                rows.append(row)
                if len(rows) == limit:
                    break
        return np.array(rows[::-1], dtype=np.int64), list(dict.fromkeys(reversed(unknown)))

    def query(self, history: np.ndarray) -> np.ndarray:
        return session_query(self.space.vectors[history], self.query_decay)

    def allowed_mask(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """`allowed` checked: None, or one bool per item row; ValueError naming the problem otherwise."""
        return None if allowed is None else checked_mask(allowed, self.n_items)

    def retrieve(
        self, query: np.ndarray, n: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ANN top-n for `query`, none of `exclude`, only `allowed` rows (None: all)."""
        mask = self.allowed_mask(allowed)
        if mask is None:
            return search_excluding(self.index, query, n, exclude, self.n_items)
        return search_allowed(self.index, self.space.context_vectors, query, n, exclude, mask)

    def candidates(
        self,
        history: np.ndarray,
        recipe: Recipe,
        exclude: np.ndarray | None = None,
        given: np.ndarray | None = None,
        query: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        allowed_count: int | None = None,
    ) -> Pool:
        """The merged pool of `recipe` for a session (rows oldest first, trimmed); `exclude` defaults to the
        session's own items, the ANN query to the session's (`query`: a caller's vector instead). With `allowed`
        (bool per item row; `allowed_count` its count when known) every source returns only allowed rows."""
        session = Session(
            history,
            query if query is not None else self.query(history) if history.size else None,
            np.unique(history) if exclude is None else exclude,
            np.zeros(0, dtype=np.int64) if given is None else given,
            self.allowed_mask(allowed),
            allowed_count,
        )
        return gather(self.sources, recipe, session)

    def rank(
        self, history: np.ndarray, candidates: np.ndarray, retrieval_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates ordered best first with the ranker's probabilities. Ties keep retrieval order."""
        if candidates.size == 0 or history.size == 0:
            return candidates, retrieval_scores
        session_unit = self.query(history)
        x = features(self.space, history, candidates, retrieval_scores, session_unit, self.ranker.names)
        probs = self.ranker.probabilities(x)
        order = np.argsort(-probs, kind="stable")
        return candidates[order], probs[order]

    def popular(
        self, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular rows, none of `exclude`, only `allowed` ones (None: all), and their popularity
        relative to the most popular item's (cold start and filling a short answer)."""
        pop = self.space.tables.popularity
        none = np.zeros(0, dtype=np.int64)
        top = self._popular.top(k, none if exclude is None else np.asarray(exclude), self.allowed_mask(allowed))
        return top, pop[top] / max(float(pop.max()), 1.0)

    def recommend(
        self,
        history: np.ndarray,
        k: int,
        n_candidates: int | None = None,
        rank: bool = True,
        recipe: Recipe | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The whole pipeline in process: the reference the served answer must equal. Candidates from `recipe`;
        without one, ANN alone for `n_candidates` (the original pipeline), else the bundle's default recipe.
        `allowed` (bool per item row, None: all) keeps every stage to the rows a filter lets through."""
        history = history[-MAX_SESSION:]
        if history.size == 0:
            return self.popular(k, allowed=allowed)
        if recipe is None and n_candidates is not None:
            candidates, scores = self.retrieve(self.query(history), n_candidates, np.unique(history), allowed)
        else:
            pool = self.candidates(history, recipe or self.default_recipe, allowed=allowed)
            candidates, scores = pool.rows, pool.scores
        if rank:
            candidates, scores = self.rank(history, candidates, scores)
        return candidates[:k], scores[:k]


def load_model(directory: Path, verify: bool = True) -> Model:
    directory = Path(directory)
    manifest = bundle.load_manifest(directory, verify=verify)
    item_ids = (directory / "items.txt").read_text().split("\n")
    # Still memory-mapped, but as plain ndarray views: indexing the np.memmap subclass runs Python code per call.
    vectors = np.asarray(np.load(directory / "vectors.npy", mmap_mode="r", allow_pickle=False))
    context = np.asarray(np.load(directory / "context_vectors.npy", mmap_mode="r", allow_pickle=False))
    with np.load(directory / "tables.npz", allow_pickle=False) as t:
        tables = FeatureTables(
            popularity=t["popularity"],
            transitions=Csr(t["transitions_indptr"], t["transitions_indices"], t["transitions_data"]),
            covisits=_covisits_or_empty(t),
            transition_out=t["transition_out"],
        )
    covisit = CovisitParams(**manifest.get("sources", {}).get("covisit", {}))
    slist, slist_params = _slist_or_none(directory), SlistParams(**manifest.get("sources", {}).get("slist", {}))
    index_info = manifest["index"]
    index = load_index(index_info["backend"], directory / "index", index_info["params"], context)
    return Model(
        version=manifest["version"],
        manifest=manifest,
        item_ids=item_ids,
        index_of={item: i for i, item in enumerate(item_ids)},
        space=ItemSpace(vectors, context, tables, covisit, slist, slist_params),
        index=index,
        ranker=Ranker.load(directory / "ranker.json"),
    )


def _covisits_or_empty(arrays: Any) -> Csr:
    """The co-visitation table, or an empty one (no rows) for a bundle written without it: the covisit source is
    then left out (Model.sources) and a recipe naming it is refused."""
    if "covisits_indptr" not in arrays:
        return Csr(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
    return Csr(arrays["covisits_indptr"], arrays["covisits_indices"], arrays["covisits_data"])


SLIST_FILE = "slist.npz"


def _slist_or_none(directory: Path) -> Csr | None:
    """The slist model's sparse weights (recmesh.sources.slist), or None for a bundle written without them (older,
    or a catalogue too large for the closed form): the slist source is then left out and a recipe naming it is
    refused."""
    path = directory / SLIST_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as w:
        return Csr(w["indptr"], w["indices"], w["data"])
