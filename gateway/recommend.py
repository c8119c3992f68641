"""A recommendation, shared by REST and gRPC: the visitor's session in, items best first out, in at most three
hops (docs/architecture.md describes the design):

  0. session = the visitor's recorded events (one Redis read, oldest first) + the request's items, trimmed to
     the most recent limits.MAX_SESSION; each item weighs what its event type weighs (request items count as
     views);
  1. GetEmbeddings(session) -> vectors and the model version, pinned for the next hops;
  2. query = session_query(vectors, manifest decay, type weights); RetrieveCandidates(query, exclude = seen +
     exclusions), seen = the whole stored history + the session (unless include_seen);
  3. Rank(session, candidates) -> the answer's order;
  4. the request's catalogue rules (gateway.rules): boosts, the diversity cap and pins over the ranked pool.

A filter runs inside hop 2 (never an unavailable item either); an empty session gets the most popular items that
pass it.

Degrade, don't fail (:mod:`gateway.hops`): embedding store down -> candidate generation builds the query from
item ids; candidate generation down -> popular items; ranking down or out of budget -> retrieval order. Each
degraded answer lists what was skipped and why.

    recommender = Recommender(clients, versions, default_budget_ms=200)
    rec = await recommender.recommend(RecommendRequest(["a", "b"], k=5), caller_deadline_s=0.3)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gateway import checks
from gateway.budget import Budget
from gateway.clients import Clients, Embeddings, Explanation, Scored
from gateway.event_store import EventStoreUnavailable, History
from gateway.experiments import Assignment
from gateway.hops import CANDIDATES_HOP, EMBEDDINGS_HOP, RANKING_HOP, Degradation, Plan
from gateway.model_versions import ModelVersions, VersionInfo
from gateway.rules import BoostRule, DiversityRule, RuleOptions, Rules, check_rules, compile_rules
from recmesh.experiments.attribution import new_recommendation_id
from recmesh.experiments.config import merge_options
from recmesh.pipeline import session_query
from recmesh.sources.recipe import RecipeError, parse_recipe
from serving import limits, vectors
from serving.errors import InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommendOptions:
    skip_ranking: bool = False
    candidate_count: int | None = None  # None = the model version's own params.candidates
    exclude_item_ids: Sequence[str] = ()
    budget_ms: int | None = None  # None = the gateway's default
    query_vector: np.ndarray | None = None  # (dim,) float32; replaces the session's query
    include_seen: bool = False
    sources: str | None = None  # a recipe, "ann:100,covisit:100"; None = see Recommender._sources
    rules: RuleOptions = field(default_factory=RuleOptions)  # filter, boosts, pins, diversity
    explain: bool = False


@dataclass(frozen=True)
class RecommendRequest:
    session_item_ids: Sequence[str] = ()
    user_id: str = ""
    k: int = limits.DEFAULT_K
    options: RecommendOptions = field(default_factory=RecommendOptions)
    model_version: str = ""
    session_id: str = ""  # an anonymous visitor's id for experiments (user_id first)
    forced_variant: str = ""  # QA: serve this variant of the running experiment


@dataclass(frozen=True)
class ItemExplanation:
    item_id: str
    sources: list[str]
    logit: float
    intercept: float
    contributions: list[tuple[str, float]]
    other: float
    rules: list[str]


@dataclass
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    model_version: str
    degradations: list[Degradation]
    unknown_item_ids: list[str]
    session_items_dropped: int
    timings: dict[str, float]
    recommendation_id: str
    explanations: list[ItemExplanation] | None = None  # with options.explain, one per item
    filled_from_popular: int = 0
    diversity_relaxed: bool = False
    experiment: str = ""  # the running experiment and variant that served it ("" when none)
    variant: str = ""

    @property
    def degraded(self) -> bool:
        return bool(self.degradations)


def _check(request: RecommendRequest) -> None:
    options = request.options
    checks.in_range("k", request.k, 1, limits.MAX_K)
    checks.optional_in_range("options.candidate_count", options.candidate_count, 1, limits.MAX_CANDIDATE_COUNT)
    checks.optional_in_range("options.budget_ms", options.budget_ms, 1, limits.MAX_BUDGET_MS)
    checks.count("options.exclude_item_ids", options.exclude_item_ids, limits.MAX_EXCLUDE)
    checks.session("session_item_ids", request.session_item_ids)
    checks.ids("options.exclude_item_ids", options.exclude_item_ids)
    checks.identifier("user_id", request.user_id, required=False)
    checks.identifier("session_id", request.session_id, required=False)
    checks.model_version(request.model_version)
    checks.query_vector_size(options.query_vector, field="options.query_vector")
    if options.sources is not None:
        _check_recipe(options.sources)
    check_rules(options.rules, request.k)


def _check_recipe(text: str) -> None:
    """Syntax, source names and caps, before any hop; whether the version has every source is its to say."""
    if len(text) > MAX_RECIPE_CHARS:
        raise InvalidArgument(f"options.sources is longer than {MAX_RECIPE_CHARS} characters", field="options.sources")
    try:
        parse_recipe(text)
    except RecipeError as e:
        raise InvalidArgument(str(e), field="options.sources") from e


MAX_RECIPE_CHARS = 200


def _known_weights(session: list[str], weights: list[float], found: Embeddings) -> np.ndarray | None:
    """The weights of the session items the embedding store knew (its rows are the known items in session
    order, one per occurrence); None when they are all equal (then the query is the offline one, bit for bit)."""
    if len(set(weights)) <= 1:
        return None
    known: list[float] = []
    rows = found.item_ids
    for item, weight in zip(session, weights, strict=True):
        if len(known) < len(rows) and item == rows[len(known)]:
            known.append(weight)
    if len(known) != len(rows):  # not the session's known subsequence: weigh nothing rather than misalign
        log.warning("embedding rows do not follow the session; event weights ignored")
        return None
    return np.asarray(known, dtype=np.float32)


@dataclass(frozen=True)
class Recommender:
    """Recommend and POST /v1/recommend: orchestrates the event store and the three stage services."""

    clients: Clients
    versions: ModelVersions
    default_budget_ms: int

    async def recommend(self, request: RecommendRequest, caller_deadline_s: float | None = None) -> Recommendation:
        """The request's recommendation within its budget (options.budget_ms, else the gateway's default, cut to
        the caller's own deadline). InvalidArgument for input out of range, NotFound for an unknown version."""
        _check(request)
        assignment = self.clients.experiments.assign(request.user_id, request.session_id, request.forced_variant)
        if assignment is not None:
            request = with_variant(request, assignment)
            _check(request)  # the variant's options with the caller's (a filter of both, say)
        options = request.options
        query_bytes, query_version = b"", ""
        if options.query_vector is not None:
            # Bring your own vector: check it against the model it will be used with, before any hop.
            info = self.versions.get(request.model_version)
            query_bytes, query_version = (
                checks.packed_query(options.query_vector, info.dim, info.version, "options.query_vector"),
                info.version,
            )
        budget_ms = self.default_budget_ms if options.budget_ms is None else options.budget_ms
        plan = Plan(Budget.within(budget_ms, caller_deadline_s), request.model_version)
        # Expressions and attributes checked against the live catalogue before any hop
        rules = await self._rules(plan, options.rules) if options.rules.any else None

        history = await self._history(plan, request.user_id) if request.user_id else History([], [])
        session = history.item_ids + list(request.session_item_ids)
        view = self.clients.events.weights["view"]  # the request's own items count as views
        weights = history.weights + [view] * len(request.session_item_ids)
        dropped = max(0, len(session) - limits.MAX_SESSION)
        session, weights = session[-limits.MAX_SESSION :], weights[-limits.MAX_SESSION :]
        # Seen = the visitor's whole stored history (bought or viewed), not only the most recent MAX_SESSION.
        seen = [] if options.include_seen else [*history.item_ids, *session]
        exclude = list(dict.fromkeys([*seen, *options.exclude_item_ids]))

        candidates: Scored | None = None
        if assignment is not None and assignment.holdout:
            pass  # the holdout: popular items only (below)
        elif query_bytes:
            plan.version = query_version
            candidates = await self._candidates(plan, request, exclude, query_vector=query_bytes, session=session)
        elif session:
            embeddings = await self._embeddings(plan, session)
            if embeddings is None:  # store down or late: candidate generation queries by item ids instead
                candidates = await self._candidates(plan, request, exclude, item_ids=session)
            elif embeddings.item_ids:
                decay = self._manifest(embeddings.model_version).query_decay
                query = session_query(embeddings.vectors, decay, _known_weights(session, weights, embeddings))
                # the session goes along for the sources that read it (covisit); ANN alone needs the vector only
                candidates = await self._candidates(
                    plan, request, exclude, query_vector=vectors.pack(query), session=session
                )

        ranked: Scored | None = None
        pool_size = request.k if rules is None or not rules.options.reorders else limits.MAX_CANDIDATE_COUNT
        if candidates is None:  # nothing to query with, or no candidates: the most popular items
            rules = rules or await self._rules(plan, RuleOptions())  # popular items pass the catalogue too
            item_ids, scores = await self._popular(plan, pool_size, set(exclude), rules)
        else:
            if candidates.item_ids and not options.skip_ranking:
                ranked = await self._rank(plan, pool_size, session, candidates, options.explain)
            ordered = ranked or candidates
            item_ids, scores = list(ordered.item_ids[:pool_size]), ordered.scores[:pool_size]
        moved_by: list[list[str]] = [[] for _ in item_ids]
        relaxed = False
        if rules is not None and rules.options.reorders:
            item_ids, scores, moved_by, relaxed = self._reorder(rules, item_ids, scores, set(exclude), request.k)

        if assignment is not None:
            self.clients.experiment_counts.count_impression(assignment.experiment, assignment.variant)
        return Recommendation(
            item_ids=item_ids[: request.k],
            scores=scores[: request.k],
            model_version=plan.version or self.versions.current_version(),
            degradations=plan.degradations,
            unknown_item_ids=list(dict.fromkeys(plan.unknown)),
            session_items_dropped=dropped,
            timings=plan.budget.finish(),
            recommendation_id=new_recommendation_id(assignment.experiment, assignment.variant)
            if assignment
            else uuid.uuid4().hex,
            explanations=_explain(item_ids[: request.k], candidates, ranked, moved_by) if options.explain else None,
            filled_from_popular=_filled(item_ids[: request.k], candidates),
            diversity_relaxed=relaxed,
            experiment=assignment.experiment if assignment else "",
            variant=assignment.variant if assignment else "",
        )

    async def _rules(self, plan: Plan, options: RuleOptions) -> Rules:
        """The request's rules against the live catalogue, brought up to date first (one Redis round trip, within
        the budget; when Redis is down or slow, the last state known, and the answer says so)."""
        live = self.clients.catalog
        if plan.budget.exhausted:  # no time to ask: the last state known (availability included)
            return compile_rules(live.catalog, options)
        with plan.budget.stage("catalog"):
            catalog = await live.refresh(timeout_s=min(live.timeout_s, plan.budget.remaining_s()))
        if not live.stale:
            return compile_rules(catalog, options)
        plan.degrade("catalog", "catalog stale", f"{live.stale}; the catalogue as last read was used")
        try:
            return compile_rules(catalog, options)
        except InvalidArgument as e:  # perhaps the caller's attribute is in what we could not read yet
            raise Unavailable(f"the live catalogue could not be read ({live.stale}): {e}", retry_after_s=1.0) from e

    def _reorder(
        self, rules: Rules, item_ids: list[str], scores: list[float], exclude: set[str], k: int
    ) -> tuple[list[str], list[float], list[list[str]], bool]:
        """Boost includes appended (at the pool's lowest score), then boosts, diversity and pins over the pool."""
        catalog = self.clients.catalog.catalog
        included = rules.included(catalog, set(item_ids), exclude)
        floor = min(scores, default=0.0)
        pool_ids = item_ids + [item for item, _ in included]
        pool_scores = scores + [floor] * len(included)
        reranked = rules.apply(catalog, pool_ids, pool_scores, k)
        rule_of = dict(included)
        moved = [
            ([f"{rule_of[i]}:include"] if i in rule_of else []) + m
            for i, m in zip(reranked.item_ids, reranked.moved_by, strict=True)
        ]
        final_scores = [0.0 if s != s else float(s) for s in reranked.scores.tolist()]  # NaN: a pin no source found
        return reranked.item_ids, final_scores, moved, reranked.diversity_relaxed

    async def _history(self, plan: Plan, user_id: str) -> History:
        with plan.budget.stage("events"):
            try:
                return await self.clients.events.history(user_id, plan.budget.remaining_s())
            except EventStoreUnavailable:
                plan.degrade("events", "redis unavailable", "visitor history not read")
                return History([], [])

    async def _embeddings(self, plan: Plan, session: list[str]) -> Embeddings | None:
        """Hop 1. None when the store is down or late (the plan is marked degraded)."""
        store = self.clients.embeddings
        found = await plan.run(
            EMBEDDINGS_HOP, lambda timeout_s: store.get_embeddings(session, plan.version, timeout_s=timeout_s)
        )
        if found is None:
            return None
        plan.version = found.model_version  # pinned for hops 2 and 3
        plan.unknown.extend(found.unknown_item_ids)
        if found.degraded:
            plan.degrade("embeddings", "embedding-store degraded", found.degraded_reason or "fallback tier")
        return found

    async def _candidates(
        self,
        plan: Plan,
        request: RecommendRequest,
        exclude: list[str],
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
        session: Sequence[str] = (),
    ) -> Scored | None:
        """Hop 2, with the exclusions applied. None when there are no candidates to rank (popular items next).
        With a recipe (`_sources`) the whole merged pool of its sources comes back, in one hop."""
        sources = self._sources(plan, request)
        k = 0 if sources else self._candidate_count(plan, request)
        rules = request.options.rules

        async def retrieve(timeout_s: float) -> Scored:
            try:
                return await self.clients.candidates.retrieve(
                    query_vector=query_vector,
                    item_ids=item_ids or (session if sources else ()),
                    k=k,
                    sources=sources,
                    exclude_item_ids=exclude[: limits.MAX_EXCLUDE],
                    model_version=plan.version,
                    timeout_s=timeout_s,
                    filter=rules.filter,
                    fill_from_popular=bool(rules.filter) and not rules.filter_strict,
                    with_provenance=request.options.explain,
                )
            except NotFound:
                if not item_ids:
                    raise
                return Scored([], [], plan.version, list(item_ids))  # none of the items is known

        found = await plan.run(CANDIDATES_HOP, retrieve)
        if found is None:
            return None
        if found.catalog_stale_reason:
            plan.degrade(
                "candidates", "catalog stale", f"{found.catalog_stale_reason}; filtered by the catalogue as last read"
            )
        plan.version = found.model_version
        if item_ids:
            plan.unknown.extend(found.unknown_item_ids)
            if not found.item_ids:
                return None  # none of the session is known: popular items, as for an unknown session
        if len(exclude) > limits.MAX_EXCLUDE:  # only the first MAX_EXCLUDE went upstream: filter the rest here
            excluded = set(exclude)
            keep = [i for i, item in enumerate(found.item_ids) if item not in excluded]
            found = Scored(
                [found.item_ids[i] for i in keep],
                [found.scores[i] for i in keep],
                found.model_version,
                found.unknown_item_ids,
                found.source_names,
                bytes(found.found_by[i] for i in keep) if found.found_by else b"",
                sum(1 for i in keep if i >= len(found.item_ids) - found.filled),
            )
        return found

    async def _rank(
        self, plan: Plan, k: int, session: list[str], candidates: Scored, explain: bool = False
    ) -> Scored | None:
        """Hop 3. None when ranking is down, late or out of budget (retrieval order is served)."""
        ranking = self.clients.ranking
        ranked = await plan.run(
            RANKING_HOP,
            lambda timeout_s: ranking.rank_candidates(session, candidates, k, timeout_s=timeout_s, explain=explain),
        )
        if ranked is not None and not plan.unknown:
            session_ids = set(session)
            plan.unknown.extend(i for i in ranked.unknown_item_ids if i in session_ids)
        return ranked

    async def _popular(self, plan: Plan, k: int, exclude: set[str], rules: Rules) -> tuple[list[str], list[float]]:
        """The version's most popular items that pass the request's filter and are not unavailable."""
        with plan.budget.stage("popular"):
            info = self.versions.get(plan.version)
            plan.version = info.version
            items = await info.items()
            catalog = self.clients.catalog.catalog
            return items.popular(k, exclude, lambda ids: rules.passes(catalog, ids))

    def _candidate_count(self, plan: Plan, request: RecommendRequest) -> int:
        """Candidates to retrieve: what the caller asked for, else what the pinned version's ranker was trained to
        order (its manifest's params.candidates); never fewer than k."""
        asked = request.options.candidate_count
        if asked is None:
            asked = min(self._manifest(plan.version).default_candidates, limits.MAX_CANDIDATE_COUNT)
        return max(asked, request.k)

    def _sources(self, plan: Plan, request: RecommendRequest) -> str:
        """The request's recipe; else ANN alone when it set candidate_count; else the pinned version's default
        recipe ("" for a version without one: ANN alone, as before recipes)."""
        options = request.options
        if options.sources is not None:
            return options.sources
        if options.candidate_count is not None:
            return ""
        return self._manifest(plan.version).default_recipe

    def _manifest(self, version: str) -> VersionInfo:
        try:
            return self.versions.get(version)
        except NotFound as e:
            raise Unavailable(f"model version {version!r} served upstream is not in the gateway's models_dir") from e


def _filled(item_ids: list[str], candidates: Scored | None) -> int:
    """How many of the answer's items the relaxed filter added (the candidate list's last `filled`)."""
    if candidates is None or not candidates.filled:
        return 0
    fill = set(candidates.item_ids[len(candidates.item_ids) - candidates.filled :])
    return sum(1 for item in item_ids if item in fill)


def _explain(
    item_ids: list[str], candidates: Scored | None, ranked: Scored | None, moved_by: list[list[str]]
) -> list[ItemExplanation]:
    """Per item: the sources that found it (decoded from candidate generation's bits), the ranker's terms, the
    rules that moved it. An item no source found was placed by a rule (a pin, a boost's include) or is popular."""
    sources: dict[str, list[str]] = {}
    if candidates is not None and candidates.found_by:
        names = candidates.source_names
        for item, bits in zip(candidates.item_ids, candidates.found_by, strict=True):
            sources[item] = [name for i, name in enumerate(names) if bits >> i & 1]
    terms: dict[str, Explanation] = {}
    if ranked is not None and ranked.explanations:
        terms = dict(zip(ranked.item_ids, ranked.explanations, strict=True))
    out = []
    for item, rules in zip(item_ids, moved_by, strict=True):
        found = sources.get(item) or (["popular"] if candidates is None else [])
        if not found and "pin" in rules:
            found = ["pin"]
        elif not found and any(rule.endswith(":include") for rule in rules):
            found = ["rule"]
        t = terms.get(item)
        out.append(
            ItemExplanation(
                item,
                found,
                t.logit if t else 0.0,
                t.intercept if t else 0.0,
                t.contributions if t else [],
                t.other if t else 0.0,
                rules,
            )
        )
    return out


def with_variant(request: RecommendRequest, assignment: Assignment) -> RecommendRequest:
    """The request as its experiment variant serves it, merged as recmesh.experiments.config.merge_options says (the
    variant's options win, except that a filter must pass both and the variant's boosts follow the caller's)."""
    options, rules = request.options, request.options.rules
    mine = {
        "skip_ranking": options.skip_ranking,
        "sources": options.sources,
        "candidate_count": options.candidate_count,
        "filter": rules.filter,
        "filter_strict": rules.filter_strict,
        "boosts": list(rules.boosts),
        "diversity": rules.diversity,
        "model_version": request.model_version,
    }
    merged = merge_options(mine, assignment.options)
    diversity = merged["diversity"]
    rules = replace(
        rules,
        filter=merged["filter"],
        filter_strict=merged["filter_strict"],
        boosts=[b if isinstance(b, BoostRule) else BoostRule(**b) for b in merged["boosts"]],  # the variant's: dicts
        diversity=DiversityRule(**diversity) if isinstance(diversity, dict) else diversity,
    )
    options = replace(
        options,
        skip_ranking=merged["skip_ranking"],
        sources=merged["sources"],
        candidate_count=merged["candidate_count"],
        rules=rules,
    )
    return replace(request, options=options, model_version=merged["model_version"])
