"""recmesh-client (clients/python) against a real stack: the convenience client in this venv, and the built wheel in
a fresh venv holding only it, grpcio and protobuf (no recmesh main package), as an outside user installs it."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import grpc
import pytest

from devtools.stack import LocalStack
from recmesh.v1 import catalog_pb2 as catalog_pb
from recmesh.v1 import recommendation_service_pb2 as pb
from recmesh_client import RecmeshClient, RecmeshError, event
from recmesh_client.vectors import pack, unpack_rows
from tests.clients.conftest import ROOT

pytestmark = pytest.mark.integration


def test_recommend_stages_and_event_stream(stack: LocalStack, session: list[str]) -> None:
    with RecmeshClient(stack.grpc_address, timeout=5.0) as client:
        reply = client.recommend(session, k=5, options=pb.RecommendOptions(budget_ms=2000))
        assert len(reply.items) == 5 and reply.model_version
        assert not set(i.item_id for i in reply.items) & set(session)  # seen items are excluded by default

        vectors = client.item_embeddings([*session[:2], "no-such-item"])
        rows = unpack_rows(vectors.vectors, vectors.dim)
        assert list(vectors.item_ids) == session[:2] and len(rows) == 2 and list(vectors.unknown_item_ids)

        nearest = client.find_candidates(query_vector=pack(rows[0]), k=3)
        assert len(nearest.candidates) == 3
        ranked = client.rank_candidates([(i.item_id, i.score) for i in reply.items], session_item_ids=session, k=3)
        assert {i.item_id for i in ranked.items} <= {i.item_id for i in reply.items} and len(ranked.items) == 3

        user = f"py-client-{uuid.uuid4().hex[:8]}"
        recorded = client.record_events(event(user, item, "click") for item in session)
        assert recorded.stored == len(session)
        assert len(client.recommend(user_id=user, k=5).items) == 5  # the recorded events are the session now


def test_the_catalogue_from_the_client(stack: LocalStack, session: list[str]) -> None:
    """Write an item, read it back, filter with it, and delete it: the items API and the options through the
    typed client."""
    with RecmeshClient(stack.grpc_address, timeout=5.0) as client:
        written = client.upsert_items({"py-new": {"category": "zz-test", "available": True, "price": 3.5}})
        assert written.upserted == 1 and written.catalog_seq > 0
        got = client.get_item("py-new")
        assert dict(got.item.attributes) == {"category": "zz-test", "available": True, "price": 3.5}
        assert not got.known_to_model
        include = [catalog_pb.Boost(filter='category == "zz-test"', include=1, add=10.0)]
        reply = client.recommend(session, k=5, options=pb.RecommendOptions(boosts=include, explain=True))
        assert reply.items[0].item_id == "py-new" and list(reply.explanations[0].sources) == ["rule"]
        assert client.delete_items(["py-new"]).deleted == 1


def test_a_failed_call_raises_recmesh_error_with_the_request_id(stack: LocalStack, session: list[str]) -> None:
    client = RecmeshClient(stack.grpc_address, timeout=5.0, metadata=[("x-client", "tests")])
    with client, pytest.raises(RecmeshError) as failed:
        client.recommend(session, k=100_000, request_id="py-client-bad-k")
    assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.request_id == "py-client-bad-k" and "k" in failed.value.details


def test_unknown_event_kind_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        event("u", "i", "like")


def test_the_wheel_alone_calls_a_live_gateway(stack: LocalStack, session: list[str], tmp_path: Path) -> None:
    """Build the client wheel, install it into a fresh venv with only grpcio + protobuf, call the stack from there."""
    source = tmp_path / "client-source"  # a copy: setuptools leaves build/ next to the sources it builds
    shutil.copytree(ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run([*build, str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("recmesh_client-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The versions running here, so pip finds them in its cache instead of resolving anew.
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("grpcio", "protobuf")]
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel), *pins]
    subprocess.run(install, check=True, timeout=600, capture_output=True)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], check=True, capture_output=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "recmesh-client" in installed and "recmesh" not in installed
    assert not installed & {"numpy", "scipy", "scann", "gensim", "faiss-cpu", "matplotlib", "redis", "fastapi"}

    script = textwrap.dedent(
        f"""
        import importlib.util, json
        from recmesh_client import RecmeshClient, event
        assert importlib.util.find_spec("recmesh.bundle") is None  # the stubs only, not the recmesh main package
        with RecmeshClient({stack.grpc_address!r}, timeout=5.0) as client:
            reply = client.recommend({session!r}, k=4)
            stored = client.record_events([event("wheel-user", item) for item in {session!r}]).stored
        print(json.dumps({{"items": [i.item_id for i in reply.items], "stored": stored}}))
        """
    )
    # -I and a cwd without sources: only what the fresh venv installed is importable
    ran = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert len(answer["items"]) == 4 and answer["stored"] == len(session)
