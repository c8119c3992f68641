"""The live item catalogue in Redis: every process follows one change log, so a write (an item marked unavailable)
is seen by the next recommendation of every replica, with no retraining.

Keys (recmesh/redis_layout.py, in the store): one hash per item (attribute -> value as JSON text), the set of ids,
the schema hash (attribute -> type), ``seq`` (writes so far), ``epoch`` (when this catalogue was started in this
Redis: a Redis that lost its data starts a new one, so followers reload instead of replaying on top of a world
that is gone) and the log: a stream with one entry per write, id ``{seq}-0``, carrying the WHOLE resulting
attributes of every item the write touched, so replaying an entry twice changes nothing.

A write is one Lua script (:data:`WRITE_SCRIPT`, atomic): it checks every value's type against the schema and the
attribute cap and refuses the whole call (naming the item and attribute) before writing anything; then it writes
the items, bumps ``seq`` and appends the log entry. Modes: ``replace`` (the item's whole attributes), ``merge``
(only those given; a None value removes one), ``delete``, ``seed`` (replace, for items not yet present only: what
``recmesh publish`` does with a bundle's catalogue). A call carries at most :data:`MAX_BATCH` items.

A reader takes a snapshot (:func:`read_snapshot`: seq first, then every item, then the log entries after that
seq, so a write during the scan is not missed) and then follows the log (:func:`read_changes`); a follower too far
behind (the log trimmed past it) reloads. This module is the synchronous half (CLI, publish); the serving
processes use ``serving.catalog_live.LiveCatalog`` (asyncio) on top of the same encoders and decoders.

Usage::

    client = redis.Redis.from_url("redis://localhost:6379/0")
    write_items(client, [("a", {"category": "shoes", "price": 29.99, "available": True})], "replace")  # -> seq
    write_items(client, [("a", {"available": False})], "merge")
    delete_items(client, ["b"])
    catalog = read_snapshot(client)            # Catalog, catalog.seq = the log position it reflects
    catalog = read_changes(client, catalog)    # the same object, caught up (or a fresh snapshot)
    seed(client, bundle_catalog)               # items not yet present only -> how many were written
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

from recmesh.catalog.table import MAX_ATTRIBUTES, Catalog, CatalogError, Value, type_of
from recmesh.redis_layout import (
    CATALOG_EPOCH_KEY,
    CATALOG_IDS_KEY,
    CATALOG_LOG_KEY,
    CATALOG_LOG_MAXLEN,
    CATALOG_SCHEMA_KEY,
    CATALOG_SEQ_KEY,
    catalog_item_key,
)

logger = logging.getLogger(__name__)

Mode = Literal["replace", "merge", "delete", "seed"]
MODES: tuple[Mode, ...] = ("replace", "merge", "delete", "seed")
MAX_BATCH = 1000  # items per write call (one script run: Redis does nothing else meanwhile)
READ_CHUNK = 1000  # ids per SSCAN page / HGETALL pipeline of a snapshot
SNAPSHOT_ATTEMPTS = 3  # a snapshot whose log was trimmed past it while scanning is taken again
FIXED_KEYS = [CATALOG_IDS_KEY, CATALOG_SCHEMA_KEY, CATALOG_SEQ_KEY, CATALOG_LOG_KEY, CATALOG_EPOCH_KEY]

# KEYS: ids, schema, seq, log, epoch, then one item key per item (in ARGV's order).
# ARGV: mode, attribute cap, log maxlen, then per item: its id, n, and n triples (attribute, value as JSON text,
# type; type '' = remove the attribute, merge only).
# Returns {1, seq, items written} (seq unchanged when nothing was written), {0, item, attribute, expected type,
# JSON text} for a type conflict, {-1, item, cap} past the attribute cap; nothing is written unless every check
# passed. The seq is past the log's last entry too, so a lost seq key can never make XADD refuse a write.
WRITE_SCRIPT = """
local mode, cap, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local schema, known = {}, 0
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do schema[flat[i]] = flat[i + 1]; known = known + 1 end
local items, chosen, pos = {}, {}, 4
for k = 6, #KEYS do
  local id, n = ARGV[pos], tonumber(ARGV[pos + 1])
  local item = {id = id, key = KEYS[k], first = pos + 2, last = pos + 1 + 3 * n}
  pos = item.last + 1
  if mode ~= 'seed' or (not chosen[id] and redis.call('SISMEMBER', KEYS[1], id) == 0) then
    items[#items + 1] = item
    chosen[id] = true
  end
end
local added = {}
for _, item in ipairs(items) do
  for i = item.first, item.last, 3 do
    local name, kind = ARGV[i], ARGV[i + 2]
    if kind ~= '' then
      local want = schema[name]
      if want == nil then
        known = known + 1
        if known > cap then return {-1, item.id, cap} end
        schema[name] = kind
        added[#added + 1] = name
        added[#added + 1] = kind
      elseif want ~= kind then
        return {0, item.id, name, want, ARGV[i + 1]}
      end
    end
  end
end
local ops = {}
for _, item in ipairs(items) do
  if mode == 'delete' then
    if redis.call('SREM', KEYS[1], item.id) == 1 then
      redis.call('DEL', item.key)
      ops[#ops + 1] = {item.id, cjson.null}
    end
  else
    if mode ~= 'merge' then redis.call('DEL', item.key) end
    local set = {}
    for i = item.first, item.last, 3 do
      if ARGV[i + 2] == '' then
        redis.call('HDEL', item.key, ARGV[i])
      else
        set[#set + 1] = ARGV[i]
        set[#set + 1] = ARGV[i + 1]
      end
    end
    if #set > 0 then redis.call('HSET', item.key, unpack(set)) end
    redis.call('SADD', KEYS[1], item.id)
    ops[#ops + 1] = {item.id, redis.call('HGETALL', item.key)}
  end
end
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if #ops == 0 then return {1, seq, 0} end
if #added > 0 then redis.call('HSET', KEYS[2], unpack(added)) end
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
if #last > 0 then
  local logged = tonumber(string.match(last[1][1], '^(%d+)'))
  if logged > seq then seq = logged end
end
seq = seq + 1
if redis.call('EXISTS', KEYS[5]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[5], now[1] .. '.' .. now[2])
end
redis.call('SET', KEYS[3], seq)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, seq .. '-0', 'ops', cjson.encode(ops))
return {1, seq, #ops}
"""


class LogGap(Exception):
    """The log no longer holds the entry a follower needs next (trimmed, or Redis lost it): reload instead."""


@dataclass(frozen=True)
class WriteResult:
    seq: int  # the log position after the write (unchanged when nothing was written)
    written: int  # items written (seed: those not yet present; delete: those that were present)


_SCRATCH = Catalog()  # checks names and values only: it never holds anything


def as_text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _int(raw: bytes | str | int | None) -> int:
    return 0 if raw is None else int(raw)


def encode_write(docs: Sequence[tuple[str, Mapping[str, object]]], mode: str) -> tuple[list[str], list[str | int]]:
    """The (keys, args) of one run of :data:`WRITE_SCRIPT`; CatalogError (nothing sent) for a bad mode, id, name,
    value or a batch over :data:`MAX_BATCH`. Values are encoded here with json.dumps, so Lua never re-encodes a
    number; their types are computed here and checked against the schema by the script."""
    if mode not in MODES:
        raise CatalogError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(docs) > MAX_BATCH:
        raise CatalogError(f"at most {MAX_BATCH} items per write, got {len(docs)}: split the call")
    keys: list[str] = list(FIXED_KEYS)
    args: list[str | int] = [mode, MAX_ATTRIBUTES, CATALOG_LOG_MAXLEN]
    for item_id, attrs in docs:
        if not isinstance(item_id, str) or not item_id:
            raise CatalogError(f"item id {item_id!r} must be a non-empty string")
        if not isinstance(attrs, Mapping):
            raise CatalogError(f"item {item_id!r}: attributes must be an object, got {type(attrs).__name__}")
        triples: list[str] = []
        if mode != "delete":
            for name, value in _SCRATCH.check(item_id, attrs).items():
                if value is None:
                    if mode == "merge":  # replace/seed: an absent attribute is simply not stored
                        triples += [name, "null", ""]
                    continue
                original = attrs[name]  # ints stay ints in Redis (check() made them floats)
                triples += [name, json.dumps(original, ensure_ascii=False), type_of(original)]
        keys.append(catalog_item_key(item_id))
        args += [item_id, len(triples) // 3, *triples]
    return keys, args


def decode_write_reply(reply: Sequence[Any]) -> WriteResult:
    """The script's answer -> WriteResult, or the CatalogError it reported (then nothing was written)."""
    status = int(reply[0])
    if status == 1:
        return WriteResult(seq=int(reply[1]), written=int(reply[2]))
    if status == 0:
        item, name, expected, value = (as_text(r) for r in reply[1:5])
        raise CatalogError(
            f"item {item!r}, attribute {name!r}: the catalogue holds {expected} values there, got {value}; "
            f"nothing of this call was written"
        )
    raise CatalogError(
        f"item {as_text(reply[1])!r}: the catalogue holds at most {int(reply[2])} attributes; nothing of this call "
        f"was written"
    )


def decode_attrs(item_id: str, raw: Mapping[Any, Any] | Sequence[Any]) -> dict[str, Value]:
    """An item's attributes as HGETALL (a mapping) or the script's log (a flat list, or {} when empty) holds them;
    CatalogError naming the item and attribute for a value that is not a string, number or boolean."""
    pairs: Iterable[tuple[Any, Any]] = (
        raw.items() if isinstance(raw, Mapping) else zip(raw[0::2], raw[1::2], strict=True)
    )
    attrs: dict[str, Value] = {}
    for name, text in pairs:
        try:
            value = _plain(text)
            if value is None:
                value = json.loads(text)
                type_of(value)
        except (ValueError, CatalogError) as e:  # JSONDecodeError is a ValueError
            raise CatalogError(f"item {item_id!r}, attribute {as_text(name)!r}: bad stored value {text!r} ({e})") from e
        attrs[as_text(name)] = value
    return attrs


def _plain(raw: bytes | str) -> Value | None:
    """The common stored values without the JSON parser (a snapshot decodes hundreds of thousands): a string
    without escapes, true, false, a plain number; None for anything else (json.loads decides)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and "\\" not in text and '"' not in text[1:-1]:
        return text[1:-1]
    if text == "true":
        return True
    if text == "false":
        return False
    if text and (text[0].isdigit() or text[0] == "-") and text.lstrip("-").replace(".", "", 1).isdigit():
        number = float(text)
        return int(number) if "." not in text and abs(number) < 2**53 else number
    return None


def entry_seq(entry_id: bytes | str) -> int:
    return int(as_text(entry_id).split("-", 1)[0])


def decode_ops(fields: Mapping[Any, Any]) -> list[tuple[str, dict[str, Value] | None]]:
    """The (item id, whole attributes or None for a delete) of one log entry, in the order they were written;
    an item whose attributes cannot be read is left out (logged)."""
    raw = fields.get(b"ops", fields.get("ops"))
    try:
        ops = json.loads(raw) if raw is not None else None
    except ValueError:
        ops = None
    if not isinstance(ops, list):
        logger.warning("catalogue log entry without a readable ops list: skipped (%r)", raw)
        return []
    out: list[tuple[str, dict[str, Value] | None]] = []
    for op in ops:
        if not (isinstance(op, list) and len(op) == 2 and isinstance(op[0], str)):
            logger.warning("catalogue log: malformed op %r skipped", op)
            continue
        item_id, attrs = op
        if attrs is None:
            out.append((item_id, None))
            continue
        try:
            out.append((item_id, decode_attrs(item_id, attrs if attrs else [])))  # cjson writes an empty list as {}
        except (CatalogError, ValueError, TypeError) as e:
            logger.warning("catalogue log: %s; item skipped", e)
    return out


def apply_entries(catalog: Catalog, entries: Sequence[Any]) -> int:
    """Apply XRANGE entries (oldest first) to ``catalog`` in place and return its new ``seq``. Entries at or
    below ``catalog.seq`` are already reflected and skipped (their docs are whole, so replaying is harmless
    anyway); LogGap when the first new entry is not ``seq + 1`` (the log was trimmed past this catalogue)."""
    for entry_id, fields in entries:
        seq = entry_seq(entry_id)
        if seq <= catalog.seq:
            continue
        if seq != catalog.seq + 1:
            raise LogGap(f"the catalogue log jumps from {catalog.seq} to {seq}")
        for item_id, attrs in decode_ops(fields):
            if attrs is None:
                catalog.remove(item_id)
                continue
            try:
                catalog.upsert(item_id, attrs)
            except CatalogError as e:  # only a hand-edited Redis can disagree with its own schema
                logger.warning("catalogue log entry %s: %s; item skipped", seq, e)
        catalog.seq = seq
    return catalog.seq


def build_snapshot(seq: int, docs: Mapping[str, Mapping[Any, Any]], entries: Sequence[Any]) -> Catalog:
    """A Catalog of the items read by a scan that started at log position ``seq``, caught up with the log
    entries after it (LogGap if the log no longer starts there). Items sorted by id: the same state always gets
    the same rows."""
    item_ids: list[str] = []
    columns: dict[str, tuple[list[int], list[Value]]] = {}
    for item_id in sorted(docs):
        try:
            attrs = decode_attrs(item_id, docs[item_id])
        except CatalogError as e:
            logger.warning("live catalogue: %s; item skipped", e)
            continue
        row = len(item_ids)
        item_ids.append(item_id)
        for name, value in attrs.items():
            rows, values = columns.setdefault(name, ([], []))
            rows.append(row)
            values.append(float(value) if type(value) is int else value)  # numbers are float64 columns
    try:
        catalog = Catalog.of_columns(item_ids, columns)
    except CatalogError as e:  # values of two types under one name (written around the script): item by item
        logger.warning("live catalogue: %s; reading it item by item, skipping what does not fit", e)
        catalog = Catalog()
        for item_id in item_ids:
            try:
                catalog.upsert(item_id, decode_attrs(item_id, docs[item_id]))
            except CatalogError as item_error:
                logger.warning("live catalogue: %s; item skipped", item_error)
    catalog.seq = seq
    apply_entries(catalog, entries)
    return catalog


def log_start(seq: int) -> str:
    """The XRANGE start of the entries after ``seq``."""
    return f"{seq + 1}-0"


# ------------------------------------------------------------------------------------------------ sync I/O
def _run(client: redis.Redis, docs: Sequence[tuple[str, Mapping[str, object]]], mode: str) -> WriteResult:
    keys, args = encode_write(docs, mode)
    if len(keys) == len(FIXED_KEYS):
        return WriteResult(seq=current_seq(client), written=0)
    script = client.register_script(WRITE_SCRIPT)
    return decode_write_reply(script(keys=keys, args=args))  # type: ignore[arg-type]


def write_items(client: redis.Redis, docs: Sequence[tuple[str, Mapping[str, object]]], mode: str = "replace") -> int:
    """Write up to MAX_BATCH items atomically (all or none) and return the log position after the write.
    CatalogError for bad input or a type the schema refuses (nothing written); redis errors as they are."""
    return _run(client, docs, mode).seq


def delete_items(client: redis.Redis, item_ids: Sequence[str]) -> int:
    """Delete up to MAX_BATCH items (ids not present are ignored); the log position after it."""
    return _run(client, [(item_id, {}) for item_id in item_ids], "delete").seq


def seed(client: redis.Redis, catalog: Catalog, batch: int = MAX_BATCH) -> int:
    """Write ``catalog``'s items that the live catalogue does not hold yet (batches of ``batch``, each atomic);
    the number written. Items already live keep their live attributes."""
    written, docs = 0, list(catalog.docs())
    for start in range(0, len(docs), batch):
        written += _run(client, docs[start : start + batch], "seed").written
    return written


def current_seq(client: redis.Redis) -> int:
    """How many writes the live catalogue has had (0: none)."""
    return _int(client.get(CATALOG_SEQ_KEY))  # type: ignore[arg-type]


def read_schema(client: redis.Redis) -> dict[str, str]:
    raw: Mapping[Any, Any] = client.hgetall(CATALOG_SCHEMA_KEY)  # type: ignore[assignment]
    return {as_text(k): as_text(v) for k, v in raw.items()}


def check_docs(docs: Iterable[tuple[str, Mapping[str, object]]], schema: Mapping[str, str]) -> None:
    """CatalogError for the first item whose values the live ``schema`` (plus the types the earlier docs set)
    would refuse, or that takes the catalogue past MAX_ATTRIBUTES: lets a many-batch load fail before its first
    batch is written. The script checks again, atomically, per batch."""
    types = dict(schema)
    for item_id, attrs in docs:
        for name, value in _SCRATCH.check(item_id, attrs).items():
            if value is None:
                continue
            kind = type_of(value)
            known = types.setdefault(name, kind)
            if known != kind:
                raise CatalogError(
                    f"item {item_id!r}, attribute {name!r}: the catalogue holds {known} values there, got {value!r}"
                )
            if len(types) > MAX_ATTRIBUTES:
                raise CatalogError(f"item {item_id!r}: the catalogue holds at most {MAX_ATTRIBUTES} attributes")


def read_item(client: redis.Redis, item_id: str) -> dict[str, Value] | None:
    """One item's attributes, or None when it is not in the live catalogue."""
    pipe = client.pipeline(transaction=True)
    pipe.sismember(CATALOG_IDS_KEY, item_id)
    pipe.hgetall(catalog_item_key(item_id))
    present, raw = pipe.execute()
    return decode_attrs(item_id, raw) if present else None


def read_snapshot(client: redis.Redis) -> Catalog:
    """The whole live catalogue, ``seq`` set to the log position it reflects (see the module docstring)."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        start = current_seq(client)
        docs: dict[str, Mapping[Any, Any]] = {}
        cursor: int = 0
        while True:
            cursor, ids = client.sscan(CATALOG_IDS_KEY, cursor, count=READ_CHUNK)  # type: ignore[misc]
            names = [as_text(i) for i in ids]
            pipe = client.pipeline(transaction=False)
            for item_id in names:
                pipe.hgetall(catalog_item_key(item_id))
            docs.update(zip(names, pipe.execute(), strict=True))
            if int(cursor) == 0:
                break
        entries = client.xrange(CATALOG_LOG_KEY, log_start(start), "+")
        try:
            return build_snapshot(start, docs, entries)  # type: ignore[arg-type]
        except LogGap:
            continue  # more than the log's length written during the scan: take it again
    raise LogGap(f"the catalogue changed faster than a snapshot could be read ({SNAPSHOT_ATTEMPTS} attempts)")


def read_changes(client: redis.Redis, catalog: Catalog) -> Catalog:
    """``catalog`` caught up with the log (in place), or a fresh snapshot when the log cannot bring it there
    (trimmed past it, or Redis went back to an earlier seq)."""
    current = current_seq(client)
    if current == catalog.seq:
        return catalog
    if current < catalog.seq:
        return read_snapshot(client)
    try:
        apply_entries(catalog, client.xrange(CATALOG_LOG_KEY, log_start(catalog.seq), "+"))  # type: ignore[arg-type]
    except LogGap:
        return read_snapshot(client)
    if catalog.seq < current:  # the log ends before Redis' seq: entries were lost
        return read_snapshot(client)
    return catalog
