"""`recmesh catalog`: load an items file into the live catalogue in Redis, or show one item.

The whole file is read and checked (against the live schema too) before the first batch is written, so a bad
file writes nothing; then batches of 1,000 items, each one atomic write (recmesh.catalog.live). Exit status: 0
done, 2 bad input (file, values, an item not there), 1 Redis unreachable or failing; either way ONE line on stderr.

Usage::

    recmesh catalog load items.jsonl                 # replace each item's attributes
    recmesh catalog load changes.csv --merge         # change only the attributes the file gives
    recmesh catalog get item42                       # {"item_id": "item42", "category": "shoes", ...}

Hooked into the `recmesh` parser by recmesh/cli.py (``add_parser(subparsers)``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

import redis
from tqdm import tqdm

from recmesh.catalog import live
from recmesh.catalog.files import ID_FIELD, CatalogFileError, read_items
from recmesh.catalog.table import CatalogError

REDIS_URL_ENV = "REDIS_URL"  # the same variable as every other command and the services
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
EXIT_REDIS = 1
EXIT_BAD_INPUT = 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `catalog load` and `catalog get` to the `recmesh` command's subparsers."""
    catalog = subparsers.add_parser("catalog", help="the live item catalogue in Redis (attributes, availability)")
    sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="<command>")

    load = sub.add_parser("load", help="write the items of a JSON Lines or CSV file into the live catalogue")
    load.add_argument("file", help="items file: .jsonl (one object with item_id per line) or .csv (item_id column)")
    load.add_argument(
        "--merge", action="store_true", help="change only the attributes the file gives (default: replace them all)"
    )
    _add_redis_url(load)
    load.set_defaults(func=cmd_load)

    get = sub.add_parser("get", help="print one item of the live catalogue as JSON")
    get.add_argument("item_id", metavar="ID", help="the item's id")
    _add_redis_url(get)
    get.set_defaults(func=cmd_get)


def _add_redis_url(p: argparse.ArgumentParser) -> None:
    value = os.environ.get(REDIS_URL_ENV)
    p.add_argument(
        "--redis-url",
        default=value or DEFAULT_REDIS_URL,
        help=f"the store Redis (default: ${REDIS_URL_ENV} if set, else {DEFAULT_REDIS_URL})",
    )


def cmd_load(args: argparse.Namespace) -> int:
    mode = "merge" if args.merge else "replace"
    try:
        docs = read_items(args.file)
    except CatalogFileError as e:
        return _fail("load", str(e), EXIT_BAD_INPUT)
    try:
        client = _client(args.redis_url)
    except ValueError as e:
        return _fail("load", f"bad --redis-url: {e}", EXIT_BAD_INPUT)
    try:
        live.check_docs(docs, live.read_schema(client))  # a bad file writes nothing, not its first batches
        seq = live.current_seq(client)
        with tqdm(total=len(docs), desc=f"catalog {mode}", unit="item", file=sys.stderr, mininterval=0.5) as bar:
            for start in range(0, len(docs), live.MAX_BATCH):
                batch = docs[start : start + live.MAX_BATCH]
                seq = live.write_items(client, batch, mode)
                bar.update(len(batch))
    except CatalogError as e:
        return _fail("load", f"{args.file}: {e}", EXIT_BAD_INPUT)
    except redis.RedisError as e:
        return _fail("load", _redis_problem(args.redis_url, e), EXIT_REDIS)
    finally:
        client.close()
    print(f"{len(docs)} items written from {args.file} ({mode}); the live catalogue is at seq {seq}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    try:
        client = _client(args.redis_url)
    except ValueError as e:
        return _fail("get", f"bad --redis-url: {e}", EXIT_BAD_INPUT)
    try:
        attrs = live.read_item(client, args.item_id)
    except CatalogError as e:
        return _fail("get", str(e), EXIT_REDIS)  # stored by hand, not by us
    except redis.RedisError as e:
        return _fail("get", _redis_problem(args.redis_url, e), EXIT_REDIS)
    finally:
        client.close()
    if attrs is None:
        return _fail("get", f"item {args.item_id!r} is not in the live catalogue", EXIT_BAD_INPUT)
    print(json.dumps({ID_FIELD: args.item_id, **dict(sorted(attrs.items()))}, ensure_ascii=False))
    return 0


def _client(url: str) -> redis.Redis:
    """ValueError for a URL that is not a Redis URL."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def _redis_problem(url: str, error: Exception) -> str:
    parts = urlsplit(url)  # host:port/db, never the password
    where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
    return f"Redis at {where}: {error} (is Redis running there? point --redis-url or ${REDIS_URL_ENV} at it)"


def _fail(command: str, message: str, status: int) -> int:
    print(f"recmesh catalog {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return status
