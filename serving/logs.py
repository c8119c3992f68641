"""JSON logs, one object per line, with a request id carried through every hop.

Every gRPC call a recmesh server answers has its request id bound already (serving.interceptor reads
``x-request-id`` or makes one), so log lines and downstream calls carry it without the handler doing anything.
With tracing on (serving.tracing), a line written inside a span also carries its ``trace_id`` and ``span_id``
(W3C hex); off, the formatter does not look.

Usage::

    configure_logging("ranking")
    rid = get_request_id()                        # in a handler: this call's id
    stub.Rank(req, metadata=outgoing_metadata())  # in a client: pass it on to the next hop
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID_LEN = 128

request_id_var: ContextVar[str | None] = ContextVar("recmesh_request_id", default=None)

# (trace_id, span_id) of the current span, or None outside one; set by serving.tracing only when tracing is on.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def get_request_id() -> str | None:
    """The request id of the current task (None outside a request)."""
    return request_id_var.get()


def set_request_id(request_id: str | None) -> Token[str | None]:
    """Set the current task's request id; returns a token for ``request_id_var.reset``."""
    return request_id_var.set(request_id)


def set_trace_ids(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Where log lines get the current span's (trace_id, span_id) from; None: they carry none (tracing off)."""
    global _trace_ids
    _trace_ids = source


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str) -> str | None:
    """``value`` stripped, if it is usable as a request id (printable, at most 128 characters); else None."""
    value = value.strip()
    if not value or len(value) > _MAX_REQUEST_ID_LEN or not value.isprintable():
        return None
    return value


def request_id_from_metadata(invocation_metadata: Iterable[Any] | None) -> str:
    """The ``x-request-id`` of incoming gRPC metadata, or a fresh uuid4 hex if absent or unusable."""
    for item in invocation_metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key.lower() == REQUEST_ID_KEY:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            cleaned = clean_request_id(str(value))
            if cleaned:
                return cleaned
    return new_request_id()


def outgoing_metadata(request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata carrying the (given or current) request id to the next hop; empty if there is none."""
    rid = request_id or get_request_id()
    return ((REQUEST_ID_KEY, rid),) if rid else ()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, service, logger, msg, request_id, trace_id and span_id
    (tracing on, inside a span), exc_info, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = get_request_id()
        if rid:
            entry["request_id"] = rid
        if _trace_ids is not None:
            ids = _trace_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger write JSON lines to ``stream`` (stderr by default); replaces its handlers.

    Idempotent: calling it again swaps the handler instead of adding a second one.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
