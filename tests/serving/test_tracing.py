"""Tracing (serving.tracing): off installs nothing; on, spans of a real HTTP request and a real gRPC call reach a real
OTLP collector with their parents, a batch is linked to its members, and log lines carry the trace."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from recmesh.v1 import embedding_store_service_pb2_grpc
from serving import logs, tracing
from serving.channels import make_channel
from tests.otlp_collector import Collector, Span
from tests.serving.fake_servicers import request, running_server

GET_EMBEDDINGS = "/recmesh.v1.EmbeddingStoreService/GetEmbeddings"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_SERVICE_NAME": "ranking"}, False),  # naming the service is not asking for traces
    ],
)
def test_the_environment_decides(environ: dict[str, str], on: bool) -> None:
    assert tracing.requested(environ) is on


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON log lines of the root logger, written to the yielded stream while the test runs."""
    stream, root = io.StringIO(), logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure_logging("unit", "INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_off_installs_nothing(no_otel_env: None, log_lines: io.StringIO) -> None:
    assert tracing.configure_tracing("unit") is False
    assert not tracing.enabled()
    assert tracing.server_interceptors() == []
    assert tracing.client_interceptors() is None
    app = object()
    assert tracing.asgi_middleware(app) is app
    assert tracing.current_context() is None
    assert not hasattr(redis.asyncio.Redis.execute_command, "__wrapped__")  # Redis not instrumented
    with TracerProvider().get_tracer("elsewhere").start_as_current_span("someone else's span"):
        logging.getLogger("unit").info("inside a span")
    (line,) = _lines(log_lines)
    assert "trace_id" not in line and "span_id" not in line  # the formatter does not even look


def test_an_unknown_exporter_leaves_tracing_off(no_otel_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    assert tracing.configure_tracing("unit") is False
    assert tracing.server_interceptors() == []


async def _http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app that logs a line and answers 204."""
    logging.getLogger("unit").info("answering %s", scope["path"])
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
    """``app`` answers one GET of ``path``, in process (what uvicorn would hand it)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


@pytest.mark.asyncio(loop_scope="session")
async def test_on_spans_reach_the_collector_with_their_parents(
    no_otel_env: None, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO
) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        assert tracing.configure_tracing("unit") is True
        try:
            assert len(tracing.server_interceptors()) == 1 and tracing.client_interceptors()
            async with running_server() as running:  # built after configure_tracing: its server traces
                channel = make_channel(f"127.0.0.1:{running.port}")
                stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)

                async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                    await stub.GetEmbeddings(request("a"), timeout=5)  # a hop, made while answering
                    await _http_app(scope, receive, send)

                traced = tracing.asgi_middleware(app)
                await _get(traced, "/v1/x", [(b"traceparent", f"00-{trace_id}-{caller_span}-01".encode())])
                await _get(traced, "/healthz", [])  # a probe: no span
                batch_members = _batch_of_three()
                await channel.close()
        finally:
            tracing.shutdown_tracing()  # exports what is queued
        spans = collector.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id]) >= 3)

    assert not tracing.enabled() and tracing.server_interceptors() == []
    assert not hasattr(redis.asyncio.Redis.execute_command, "__wrapped__")  # Redis let go at shutdown
    mine = {s.kind + " " + s.name: s for s in spans if s.trace_id == trace_id}
    http, client, server = mine["SERVER GET /v1/x"], mine["CLIENT " + GET_EMBEDDINGS], mine["SERVER " + GET_EMBEDDINGS]
    assert http.service == "unit" and http.parent_span_id == caller_span  # the caller's traceparent is kept
    assert client.parent_span_id == http.span_id and server.parent_span_id == client.span_id
    assert not [s for s in spans if "healthz" in s.name or "Health" in s.name]

    answering = [line for line in _lines(log_lines) if line["msg"] == "answering /v1/x"]
    assert [(line["trace_id"], line["span_id"]) for line in answering] == [(trace_id, http.span_id)]
    _check_batch(spans, batch_members)


def _batch_of_three() -> list[tuple[str, str]]:
    """Three callers' spans, and one RPC made for all three in ``batch_span`` (a span inside it stands for the
    RPC); returns the callers' (trace_id, span_id)."""
    tracer = trace.get_tracer("unit", tracer_provider=tracing._provider)  # the one configure_tracing made
    members = [tracer.start_span(f"request {i}") for i in range(3)]
    contexts = [trace.set_span_in_context(span) for span in members]
    with tracing.batch_span("ranking", contexts):
        tracer.start_span("the batch RPC").end()
    for span in members:
        span.end()
    return [
        (format(s.get_span_context().trace_id, "032x"), format(s.get_span_context().span_id, "016x")) for s in members
    ]


def _check_batch(spans: list[Span], members: list[tuple[str, str]]) -> None:
    (first_trace, first_span), *others = members
    (batch,) = [s for s in spans if s.name == "ranking batch"]
    (rpc,) = [s for s in spans if s.name == "the batch RPC"]
    assert batch.trace_id == first_trace and batch.parent_span_id == first_span  # in the first member's trace
    assert rpc.parent_span_id == batch.span_id
    assert set(batch.links) == set(others) and batch.attributes["recmesh.batch.members"] == 3
    for _, span_id in others:  # every other member links to the batch that served it
        (member,) = [s for s in spans if s.span_id == span_id]
        assert member.links == ((batch.trace_id, batch.span_id),)
