"""The live catalogue's write script and readers (recmesh.catalog.live) against the real session Redis (own db)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from devtools.stack import free_port
from recmesh import bundle
from recmesh import redis_layout as layout
from recmesh.catalog import commands, live
from recmesh.catalog.table import Catalog, CatalogError
from recmesh.publish import publish
from tests.helpers import redis_url

DB = 11


@pytest.fixture
def client(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_url(redis_server, DB))
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def docs_of(catalog: Catalog) -> dict[str, dict[str, object]]:
    return dict(catalog.docs())


def test_write_stores_json_text_ids_schema_seq_and_one_log_entry(client):
    seq = live.write_items(client, [("a", {"category": "shoes", "price": 30, "available": True}), ("b", {})])
    assert seq == 1
    assert client.hgetall(layout.catalog_item_key("a")) == {
        b"category": b'"shoes"',
        b"price": b"30",
        b"available": b"true",
    }
    assert client.smembers(layout.CATALOG_IDS_KEY) == {b"a", b"b"}
    assert client.hgetall(layout.CATALOG_SCHEMA_KEY) == {
        b"category": b"string",
        b"price": b"number",
        b"available": b"boolean",
    }
    assert client.get(layout.CATALOG_SEQ_KEY) == b"1" and client.ttl(layout.CATALOG_SEQ_KEY) == -1
    [(entry_id, fields)] = client.xrange(layout.CATALOG_LOG_KEY)
    assert entry_id == b"1-0"
    ops = json.loads(fields[b"ops"])
    assert ops[0][0] == "a" and dict(zip(ops[0][1][0::2], ops[0][1][1::2], strict=True))["price"] == "30"
    assert live.read_snapshot(client).get("b") == {}  # an item without attributes exists


def test_merge_replace_delete_and_seed_semantics(client):
    live.write_items(client, [("a", {"category": "shoes", "price": 30.5, "available": True})])
    live.write_items(client, [("a", {"available": False, "price": None})], "merge")
    assert live.read_item(client, "a") == {"category": "shoes", "available": False}
    live.write_items(client, [("a", {"brand": "acme"})], "replace")
    assert live.read_item(client, "a") == {"brand": "acme"}
    live.write_items(client, [("b", {"brand": "b"}), ("c", {"brand": "c"})])
    seq = live.delete_items(client, ["b", "never-there"])
    assert live.read_item(client, "b") is None and not client.exists(layout.catalog_item_key("b"))
    assert live.delete_items(client, ["b"]) == seq  # nothing deleted: no log entry
    bundle = Catalog.of([("a", {"brand": "bundle"}), ("d", {"brand": "d", "price": 1.0})])
    assert live.seed(client, bundle) == 1  # d only: a keeps its live attributes
    assert live.read_item(client, "a") == {"brand": "acme"} and live.read_item(client, "d") == {
        "brand": "d",
        "price": 1,
    }
    assert live.seed(client, bundle) == 0
    snapshot = live.read_snapshot(client)
    assert docs_of(snapshot) == {"a": {"brand": "acme"}, "c": {"brand": "c"}, "d": {"brand": "d", "price": 1}}
    assert snapshot.seq == int(client.get(layout.CATALOG_SEQ_KEY))


def test_type_conflict_or_attribute_cap_is_refused_with_nothing_written(client):
    live.write_items(client, [("a", {"price": 30}), ("m", {f"attr{i}": i for i in range(40)})])
    before = {k: client.dump(k) for k in client.keys("*")}
    with pytest.raises(CatalogError, match=r"item 'z', attribute 'price'.*number.*\"cheap\""):
        live.write_items(client, [("y", {"price": 1}), ("z", {"price": "cheap"})])
    with pytest.raises(CatalogError, match=r"item 'q', attribute 'flag'"):  # two new items disagreeing in one call
        live.write_items(client, [("p", {"flag": True}), ("q", {"flag": "yes"})])
    with pytest.raises(CatalogError, match="at most 64 attributes"):
        live.write_items(client, [("n", {f"other{i}": i for i in range(30)})])
    with pytest.raises(CatalogError, match="attribute name"):  # checked in Python, before Redis
        live.write_items(client, [("n", {"bad name": 1})])
    with pytest.raises(CatalogError, match="at most 1000"):
        live.write_items(client, [(str(i), {}) for i in range(1001)])
    with pytest.raises(CatalogError, match="mode"):
        live.write_items(client, [("a", {})], "upsert")
    assert {k: client.dump(k) for k in client.keys("*")} == before


def test_followers_catch_up_from_the_log_in_place(client):
    live.write_items(client, [("a", {"category": "shoes", "available": True}), ("b", {"category": "bags"})])
    follower = live.read_snapshot(client)
    rows = follower.rows_of(["a", "b"]).tolist()
    live.write_items(client, [("a", {"available": False})], "merge")
    live.delete_items(client, ["b"])
    live.write_items(client, [("c", {"category": "hats"})])
    same = live.read_changes(client, follower)
    assert same is follower and follower.seq == 4
    assert docs_of(follower) == docs_of(live.read_snapshot(client))
    assert follower.rows_of(["a", "b"]).tolist() == [rows[0], -1]  # rows stay; b is gone
    assert live.read_changes(client, follower) is follower  # nothing new: nothing done


def test_a_trimmed_log_makes_a_follower_reload_the_same_catalogue(client):
    live.write_items(client, [("a", {"n": 1})])
    follower = live.read_snapshot(client)
    for i in range(5):
        live.write_items(client, [(f"i{i}", {"n": i}), ("a", {"n": 10 + i})])
    client.xtrim(layout.CATALOG_LOG_KEY, minid="4-0", approximate=False)  # entries 2 and 3 are gone
    caught_up = live.read_changes(client, follower)
    assert caught_up is not follower and caught_up.seq == 6
    assert docs_of(caught_up) == docs_of(live.read_snapshot(client))
    assert caught_up.get("a") == {"n": 14}


def test_snapshot_replays_writes_made_during_the_scan(client, monkeypatch):
    live.write_items(client, [(f"i{i}", {"n": i}) for i in range(1000)])
    live.write_items(client, [(f"j{i}", {"n": i}) for i in range(500)])
    real_sscan, calls = client.sscan, []

    def sscan_then_write(*args, **kwargs):  # a writer slips in between two pages of the scan
        page = real_sscan(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            writer = redis.Redis(connection_pool=client.connection_pool)
            live.write_items(writer, [("late", {"n": -1}), ("i0", {"n": 99})])
            live.delete_items(writer, ["j1"])
        return page

    monkeypatch.setattr(client, "sscan", sscan_then_write)
    snapshot = live.read_snapshot(client)
    assert len(calls) > 1 and snapshot.seq == 4
    assert snapshot.get("late") == {"n": -1} and snapshot.get("i0") == {"n": 99} and "j1" not in snapshot
    assert len(list(snapshot.docs())) == 1500


def test_a_lost_seq_key_never_reuses_a_log_id(client):
    live.write_items(client, [("a", {"n": 1})])
    live.write_items(client, [("a", {"n": 2})])
    client.delete(layout.CATALOG_SEQ_KEY)
    assert live.write_items(client, [("a", {"n": 3})]) == 3


def test_undecodable_stored_values_are_skipped_not_fatal(client):
    live.write_items(client, [("a", {"n": 1}), ("b", {"n": 2})])
    client.hset(layout.catalog_item_key("b"), "n", "not json")
    assert docs_of(live.read_snapshot(client)) == {"a": {"n": 1}}


# ---------------------------------------------------------------------------------------- `recmesh catalog`
def run_catalog(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="recmesh")
    commands.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["catalog", *argv])
    return int(args.func(args))


def test_cli_load_writes_in_batches_and_get_prints_json(client, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": f"i{n}", "n": n, "even": n % 2 == 0}) + "\n" for n in range(2500)))
    url = client.connection_pool.connection_kwargs
    redis_at = f"redis://127.0.0.1:{url['port']}/{DB}"
    assert run_catalog("load", str(items), "--redis-url", redis_at) == 0
    assert "2500 items" in capsys.readouterr().out
    assert live.current_seq(client) == 3  # three batches of at most 1,000
    changes = tmp_path / "changes.csv"
    changes.write_text("item_id,even\ni7,true\n")
    assert run_catalog("load", str(changes), "--merge", "--redis-url", redis_at) == 0
    capsys.readouterr()
    assert run_catalog("get", "i7", "--redis-url", redis_at) == 0
    assert json.loads(capsys.readouterr().out) == {"item_id": "i7", "even": True, "n": 7}
    assert run_catalog("get", "nope", "--redis-url", redis_at) == 2
    assert capsys.readouterr().err.strip() == "recmesh catalog get: error: item 'nope' is not in the live catalogue"


def test_cli_bad_input_exits_2_and_writes_nothing(client, tmp_path, capsys):
    redis_at = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/{DB}"
    live.write_items(client, [("a", {"price": 3})])
    conflicting = tmp_path / "items.jsonl"
    rows = [{"item_id": f"i{n}", "price": n} for n in range(1500)] + [{"item_id": "late", "price": "cheap"}]
    conflicting.write_text("\n".join(json.dumps(r) for r in rows))
    assert run_catalog("load", str(conflicting), "--redis-url", redis_at) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recmesh catalog load: error:") and "'price'" in err[0]
    assert live.current_seq(client) == 1  # not even the first batch
    assert run_catalog("load", str(tmp_path / "missing.jsonl"), "--redis-url", redis_at) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_redis_down_exits_1_with_one_line(tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "a", "n": 1}\n')
    assert run_catalog("load", str(items), "--redis-url", f"redis://127.0.0.1:{free_port()}/0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is Redis running there?" in err[0]


# ------------------------------------------------------------------------------------------- publish seeding
def test_publish_seeds_items_not_yet_live(client, tmp_path, capsys):
    tiny = tmp_path / "v-with-catalog"  # a hand-made bundle: vectors and ids are all publish needs
    tiny.mkdir()
    (tiny / "items.txt").write_text("a\nb")
    np.save(tiny / "vectors.npy", np.eye(2, 4, dtype="<f4"))
    (tiny / "catalog.jsonl").write_text('{"item_id": "a", "brand": "bundle"}\n{"item_id": "b", "brand": "b"}\n')
    bundle.seal(tiny, {"version": "v-with-catalog"})
    live.write_items(client, [("a", {"brand": "changed live"})])
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/{DB}"
    assert publish(tiny, url, progress=True) == "v-with-catalog"
    assert "1 of 2 items" in capsys.readouterr().err
    assert dict(live.read_snapshot(client).docs()) == {"a": {"brand": "changed live"}, "b": {"brand": "b"}}
    assert publish(tiny, url, progress=False) == "v-with-catalog"
    assert live.current_seq(client) == 2  # nothing new to seed: no log entry
