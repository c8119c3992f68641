"""`recmesh events export`: every visitor's recorded events, from Redis to a file `recmesh train` reads.

The gateway keeps each visitor's recent events in a Redis list (the layout and the codec are
recmesh/redis_layout.py's). This module turns them back into an event log: all visitors (SCAN, never KEYS),
each visitor's events oldest first.

    recmesh events export --redis-url redis://localhost:6379/0 --out events.csv
    recmesh train --data events.csv          # one sequence per session id (visitors without one: per visitor)

CSV columns: ``session_id,user_id,item_id,timestamp,event_type`` (timestamp in milliseconds since the epoch);
an event recorded without a session id gets its visitor's id as session id, so grouping by session and grouping
by visitor (``read_csv(path, group_by="user")``) both work. JSONL: one event per line, fields as stored plus
``user_id``, session id as recorded.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from recmesh.redis_layout import EVENTS_KEY_PATTERN, decode_events, user_of_events_key

CSV_HEADER = ("session_id", "user_id", "item_id", "timestamp", "event_type")
FORMATS = ("csv", "jsonl")
KEYS_PER_ROUND_TRIP = 500


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    users: int
    events: int
    skipped: int  # events whose item id a reader would take for a missing value (e.g. "NA")

    def __str__(self) -> str:
        skipped = f" ({self.skipped} skipped: item id reads as missing)" if self.skipped else ""
        return f"{self.path}: {self.events:,} events of {self.users:,} users{skipped}"


def visitors(client: Any, scan_count: int = 1000) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(user_id, events oldest first) for every visitor list in Redis; one LRANGE round trip per
    KEYS_PER_ROUND_TRIP visitors. SCAN may return a key twice: each visitor comes once."""
    seen: set[bytes] = set()
    batch: list[bytes] = []

    def flush() -> Iterator[tuple[str, list[dict[str, Any]]]]:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.lrange(key, 0, -1)
        for key, raw in zip(batch, pipe.execute(), strict=True):
            events = decode_events(raw)
            if events:
                yield user_of_events_key(key), events
        batch.clear()

    for key in client.scan_iter(match=EVENTS_KEY_PATTERN, count=scan_count, _type="list"):
        if key in seen:
            continue
        seen.add(key)
        batch.append(key)
        if len(batch) >= KEYS_PER_ROUND_TRIP:
            yield from flush()
    if batch:
        yield from flush()


def export_events(redis_url: str, out: str | Path, fmt: str | None = None) -> ExportSummary:
    """Write every visitor's events to ``out`` (csv, or jsonl; None = from the suffix, csv unless .jsonl),
    atomically (a temporary file renamed at the end)."""
    import redis

    from recmesh.data.readers import MISSING_IDS

    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix.lower() == ".jsonl" else "csv")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    users = events = skipped = 0
    client = redis.Redis.from_url(redis_url)
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n") if fmt == "csv" else None
            if writer is not None:
                writer.writerow(CSV_HEADER)
            for user, user_events in visitors(client):
                users += 1
                for e in user_events:
                    if writer is None:
                        record = {"user_id": user, **e}
                        f.write(orjson.dumps(record).decode() + "\n")
                    elif e["item_id"].strip() in MISSING_IDS:
                        skipped += 1
                        continue
                    else:
                        session = e.get("session_id") or user
                        writer.writerow((session, user, e["item_id"], e["timestamp_ms"], e.get("type", "view")))
                    events += 1
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        client.close()
    return ExportSummary(out, users, events, skipped)
