"""Every cap and default of recmesh's public API, in one place.

The gateway's checks (gateway/checks.py) enforce them for REST and gRPC alike, the REST schemas
(gateway/schemas.py) document them in the OpenAPI document, the proto comments state them, and the stage
services read the ones of their own API; tests/serving/test_limits.py checks that the documents agree. A value
out of range is INVALID_ARGUMENT / 400 naming the range, never a silent clamp. In proto3 an unset number is 0, so
there 0 means "the default".

    from serving import limits
    checks.in_range("k", k, 1, limits.MAX_K)
"""

from __future__ import annotations

from collections.abc import Mapping

from recmesh.pipeline import MAX_SESSION  # the most recent session items a query uses (the offline pipeline's)

__all__ = ["MAX_SESSION"]  # re-exported: a cap of the API as much as of the pipeline

# -- ids -----------------------------------------------------------------------------------------------------
MAX_ID_LEN = 256  # characters of an item, user or session id
MAX_VERSION_LEN = 128  # characters of a model version
MAX_QUERY_DIM = 4096  # values of a query vector a caller brings (the model's own dimension is checked too)
# float32's largest value: a caller's query vector whose squared norm exceeds it is refused (its dot products with
# unit item vectors, the scores, could overflow to inf), and so is a candidate score beyond it.
MAX_QUERY_SQUARED_NORM = MAX_SCORE = 3.4028234663852886e38

# -- Recommend ----------------------------------------------------------------------------------------------
DEFAULT_K = 10  # items per recommendation (and per GetSimilarItems)
MAX_K = 200
MAX_SESSION_ITEMS = 1000  # session item ids a caller may send (Recommend, RankCandidates, Rank); MAX_SESSION are used
MAX_CANDIDATE_COUNT = 1000  # options.candidate_count: candidates retrieved before ranking
DEFAULT_CANDIDATE_COUNT = 200  # for a bundle whose manifest does not say (params.candidates)
MAX_EXCLUDE = 1000  # options.exclude_item_ids (and RetrieveCandidates.exclude_item_ids)
DEFAULT_BUDGET_MS = 200  # end to end; the gateway's BUDGET_MS
MAX_BUDGET_MS = 10_000

# -- every stage on its own -----------------------------------------------------------------------------------
MAX_ITEMS = 1000  # item ids per embeddings or candidates call; candidates per rank call
CANDIDATES_DEFAULT_K = 100  # FindCandidates / RetrieveCandidates
CANDIDATES_MAX_K = 1000
RANK_MAX_K = MAX_ITEMS  # RankCandidates / Rank: 0 = all

# -- events -------------------------------------------------------------------------------------------------
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {"view": 1.0, "click": 1.5, "add_to_cart": 2.0, "purchase": 3.0}
MAX_EVENTS_PER_CALL = 500  # one REST call ({"events": [...]})
MAX_EVENTS_PER_STREAM = 10_000  # one gRPC RecordEvents stream
DEFAULT_EVENTS_PER_VISITOR = 100  # kept per visitor, newest first (the gateway's EVENTS_PER_USER)
DEFAULT_EVENT_RATE_LIMIT = 100  # events per visitor per second (EVENT_RATE_LIMIT): one full history
MAX_FUTURE_MS = 24 * 3600 * 1000  # timestamps more than a day ahead are the caller's mistake
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything older is a mistake (often seconds, not ms)

# -- internal batch calls (the stage services' Batch* RPCs) ----------------------------------------------------
MAX_BATCH_MEMBERS = 256  # requests per batch call; the gateway sends at most gateway/batching.py's MAX_BATCH

# -- transport ----------------------------------------------------------------------------------------------
MAX_BODY_BYTES = 1024 * 1024  # a REST request body

# -- the catalogue and per-request rules (docs/catalogue.md) ------------------------------------------------
MAX_EXPRESSION_CHARS = 1000  # a filter or a boost's filter (recmesh.catalog.expressions has the same cap)
MAX_BOOSTS = 20  # options.boosts
MAX_BOOST_INCLUDE = 100  # a boost's include
MAX_CATALOG_WRITE = 1000  # items per catalogue write or delete call
