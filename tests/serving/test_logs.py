"""JSON log lines and the request id (serving.logs)."""

from __future__ import annotations

import io
import json
import logging

from serving import logs


def test_json_log_line_has_request_id():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    token = logs.set_request_id("req-7")
    try:
        logs.configure_logging("ranking", "INFO", stream=stream)
        try:
            raise RuntimeError("bad")
        except RuntimeError:
            logging.getLogger("recmesh.test").exception("ranked %d items", 3, extra={"model_version": "v2"})
    finally:
        logs.request_id_var.reset(token)
        root.handlers[:], root.level = saved[0], saved[1]
    entry = json.loads(stream.getvalue().strip())
    assert entry["service"] == "ranking"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "recmesh.test"
    assert entry["msg"] == "ranked 3 items"
    assert entry["request_id"] == "req-7"
    assert entry["model_version"] == "v2"
    assert "RuntimeError: bad" in entry["exc_info"]
    assert entry["ts"].endswith("+00:00")


def test_request_id_from_metadata():
    assert logs.request_id_from_metadata((("x-request-id", "abc"),)) == "abc"
    generated = logs.request_id_from_metadata((("other", "x"),))
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert logs.request_id_from_metadata(None) != generated
    assert logs.request_id_from_metadata((("x-request-id", "x" * 500),)) != "x" * 500  # unusable: a fresh one
    assert logs.outgoing_metadata("abc") == (("x-request-id", "abc"),)
