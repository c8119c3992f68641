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
import sys

import redis
from tqdm import tqdm

from recmesh.catalog import live
from recmesh.catalog.files import ID_FIELD, CatalogFileError, read_items
from recmesh.catalog.table import CatalogError
from recmesh.cli_redis import EXIT_BAD_INPUT, EXIT_REDIS, add_redis_url, fail, redis_client, redis_problem

GROUP = "recmesh catalog "  # + the command: how error lines name it


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `catalog load` and `catalog get` to the `recmesh` command's subparsers."""
    catalog = subparsers.add_parser("catalog", help="the live item catalogue in Redis (attributes, availability)")
    sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="<command>")

    load = sub.add_parser("load", help="write the items of a JSON Lines or CSV file into the live catalogue")
    load.add_argument("file", help="items file: .jsonl (one object with item_id per line) or .csv (item_id column)")
    load.add_argument(
        "--merge", action="store_true", help="change only the attributes the file gives (default: replace them all)"
    )
    add_redis_url(load)
    load.set_defaults(func=cmd_load)

    get = sub.add_parser("get", help="print one item of the live catalogue as JSON")
    get.add_argument("item_id", metavar="ID", help="the item's id")
    add_redis_url(get)
    get.set_defaults(func=cmd_get)


def cmd_load(args: argparse.Namespace) -> int:
    mode = "merge" if args.merge else "replace"
    try:
        docs = read_items(args.file)
    except CatalogFileError as e:
        return fail(GROUP + "load", str(e), EXIT_BAD_INPUT)
    try:
        client = redis_client(args.redis_url)
    except ValueError as e:
        return fail(GROUP + "load", f"bad --redis-url: {e}", EXIT_BAD_INPUT)
    try:
        live.check_docs(docs, live.read_schema(client))  # a bad file writes nothing, not its first batches
        seq = live.current_seq(client)
        with tqdm(total=len(docs), desc=f"catalog {mode}", unit="item", file=sys.stderr, mininterval=0.5) as bar:
            for start in range(0, len(docs), live.MAX_BATCH):
                batch = docs[start : start + live.MAX_BATCH]
                seq = live.write_items(client, batch, mode)
                bar.update(len(batch))
    except CatalogError as e:
        return fail(GROUP + "load", f"{args.file}: {e}", EXIT_BAD_INPUT)
    except redis.RedisError as e:
        return fail(GROUP + "load", redis_problem(args.redis_url, e), EXIT_REDIS)
    finally:
        client.close()
    print(f"{len(docs)} items written from {args.file} ({mode}); the live catalogue is at seq {seq}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    try:
        client = redis_client(args.redis_url)
    except ValueError as e:
        return fail(GROUP + "get", f"bad --redis-url: {e}", EXIT_BAD_INPUT)
    try:
        attrs = live.read_item(client, args.item_id)
    except CatalogError as e:
        return fail(GROUP + "get", str(e), EXIT_REDIS)  # stored by hand, not by us
    except redis.RedisError as e:
        return fail(GROUP + "get", redis_problem(args.redis_url, e), EXIT_REDIS)
    finally:
        client.close()
    if attrs is None:
        return fail(GROUP + "get", f"item {args.item_id!r} is not in the live catalogue", EXIT_BAD_INPUT)
    print(json.dumps({ID_FIELD: args.item_id, **dict(sorted(attrs.items()))}, ensure_ascii=False))
    return 0
