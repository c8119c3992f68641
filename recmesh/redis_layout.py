"""Everything recmesh keeps in Redis: the key layout, the TTLs and the byte formats, in one place.

    recmesh:current_version                  the published version (no TTL: state, not cache); `recmesh publish`
                                             flips it with one SET once every vector of the version is in
    recmesh:{version}:emb:{item_id}          raw little-endian float32 bytes of the item's unit vector (the
                                             bundle's vectors.npy row); TTL VECTOR_TTL_S, rebuilt from the bundle
    recmesh:{version}:meta                   hash: dim, items, published_at (unix seconds); TTL VECTOR_TTL_S
    recmesh:events:{user_id}                 list, newest first: one JSON object per event (item_id, type,
                                             timestamp_ms, session_id); trimmed to the newest N, TTL EVENTS_TTL_S
    recmesh:ratelimit:events:{user_id}:{s}   events counted in unix second s (not under recmesh:events:, so an
                                             export's SCAN skips it)
    recmesh:catalog:item:{item_id}           hash: attribute -> its value as JSON text (``"shoes"``, ``29.99``,
                                             ``true``); no TTL (the live catalogue, recmesh.catalog.live)
    recmesh:catalog:ids                      set of every item id in the live catalogue (an item without
                                             attributes has no hash, so this set says what exists)
    recmesh:catalog:schema                   hash: attribute -> string | number | boolean, fixed by first use
    recmesh:catalog:seq                      integer: how many catalogue writes so far (the log position)
    recmesh:catalog:epoch                    "unix seconds.microseconds" of the first write into this Redis:
                                             a follower that sees another epoch reloads (the data was lost and
                                             started over, so the same seq may mean other writes)
    recmesh:catalog:log                      stream, entry id {seq}-0, one per write: field ``ops`` = JSON list of
                                             [item_id, [attr, JSON text, ...]] (the item's WHOLE attributes after
                                             the write) or [item_id, null] (deleted); trimmed to about
                                             CATALOG_LOG_MAXLEN entries
    recmesh:experiments                      JSON text: the A/B experiments document (version counter, every
                                             experiment, at most one running; recmesh.experiments.config);
                                             no TTL (state), written by `recmesh experiments start|stop`
    recmesh:experiments:{name}:counts        hash per experiment: ``{variant}:impressions`` and
                                             ``{variant}:{event type}`` -> count (HINCRBY); no TTL, kept after
                                             the experiment stops so it can still be reported

Writers: `recmesh publish` (vectors, meta, pointer; seeds the catalogue), the gateway (events, rate counters,
catalogue writes), `recmesh catalog load` (catalogue), the embedding store (vector write-backs). Readers: the
embedding store (vectors, pointer), the gateway (events, pointer, catalogue), `recmesh events export` (events).
The catalogue keys live in the store (no TTL: state); every catalogue write is one Lua script (atomic).

Two roles, best two Redis instances (docs/reliability.md): the *store* (REDIS_URL: the pointer, events, rate
counters; AOF, noeviction) and the *cache* (REDIS_CACHE_URL of the embedding store, ``--redis-cache-url`` of
publish: vectors and meta; allkeys-lru, no persistence). Memory of the store is bounded by its keys' caps: a
visitor's list holds at most EVENTS_PER_USER entries (about 100 bytes each with short ids: ~13 KB per visitor at
the default 100, measured) and expires EVENTS_TTL_S after their last event; rate counters live two seconds. So
the store needs about (visitors active in 30 days) x 13 KB; past its maxmemory it refuses writes (503). The live
catalogue adds one small hash per item (at most 64 attributes) and its log, capped at about CATALOG_LOG_MAXLEN
entries of at most 1,000 items' attributes each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

POINTER_KEY = "recmesh:current_version"
VECTOR_TTL_S = 7 * 24 * 3600
VECTOR_DTYPE = np.dtype("<f4")  # also the wire format: a vector read from Redis goes on the wire as it is

EVENTS_KEY_PREFIX = "recmesh:events:"
EVENTS_KEY_PATTERN = EVENTS_KEY_PREFIX + "*"
EVENTS_TTL_S = 30 * 24 * 3600  # a visitor's history expires 30 days after their last event
RATE_WINDOW_TTL_S = 2  # a one-second rate counter outlives its second by one

CATALOG_ITEM_KEY_PREFIX = "recmesh:catalog:item:"
CATALOG_IDS_KEY = "recmesh:catalog:ids"
CATALOG_SCHEMA_KEY = "recmesh:catalog:schema"
CATALOG_SEQ_KEY = "recmesh:catalog:seq"
CATALOG_LOG_KEY = "recmesh:catalog:log"
CATALOG_EPOCH_KEY = "recmesh:catalog:epoch"  # set by the first write; a Redis that lost it starts anew
CATALOG_LOG_MAXLEN = 10_000  # entries kept (approximately: XADD MAXLEN ~); a follower further behind reloads


def vector_key(version: str, item_id: str) -> str:
    return f"recmesh:{version}:emb:{item_id}"


def meta_key(version: str) -> str:
    return f"recmesh:{version}:meta"


def events_key(user_id: str) -> str:
    return EVENTS_KEY_PREFIX + user_id


def user_of_events_key(key: bytes) -> str:
    return key.decode()[len(EVENTS_KEY_PREFIX) :]


def rate_key(user_id: str, second: int) -> str:
    return f"recmesh:ratelimit:events:{user_id}:{second}"


def catalog_item_key(item_id: str) -> str:
    return CATALOG_ITEM_KEY_PREFIX + item_id


def encode_event(item_id: str, type: str, timestamp_ms: int, session_id: str) -> bytes:
    """One entry of a visitor's list (the user id is the key's)."""
    return orjson.dumps({"item_id": item_id, "type": type, "timestamp_ms": timestamp_ms, "session_id": session_id})


def decode_events(raw: list[bytes]) -> list[dict[str, Any]]:
    """A visitor's list as LRANGE returns it (newest first) -> its events oldest first (by timestamp, then
    arrival). Entries not written by the gateway are skipped rather than failing a recommendation or an export."""
    events = []
    for entry in reversed(raw):  # arrival order, oldest first
        try:
            value = orjson.loads(entry)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("item_id"), str):
            if not isinstance(value.get("timestamp_ms"), int):
                value["timestamp_ms"] = 0
            events.append(value)
    events.sort(key=lambda e: e["timestamp_ms"])  # stable: equal timestamps keep arrival order
    return events


EXPERIMENTS_KEY = "recmesh:experiments"  # the experiments document, JSON (recmesh.experiments.config)


def experiment_counts_key(name: str) -> str:
    """The hash of an experiment's counts: field ``{variant}:impressions`` or ``{variant}:{event type}``."""
    return f"recmesh:experiments:{name}:counts"
