"""A grpc-js client (clients/node, protos loaded at run time by @grpc/proto-loader) against a real stack: Recommend,
the GetItemEmbeddings and RankCandidates stage RPCs and the RecordEvents client stream, as another language calls
the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from devtools.stack import LocalStack
from tests.clients.conftest import ROOT

pytestmark = pytest.mark.integration
NODE_CLIENT = ROOT / "clients" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node not installed: the grpc-js client test needs Node.js >= 18 (apt-get install nodejs npm)")
    assert (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make node-install` (npm ci)"
    return binary


def test_grpc_js_calls_recommend_a_stage_and_the_event_stream(node: str, stack: LocalStack, session: list[str]) -> None:
    user = f"node-{uuid.uuid4().hex[:8]}"
    argument = json.dumps({"session": session, "user_id": user})
    ran = subprocess.run(
        [node, "smoke.js", stack.grpc_address, argument], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)

    recommend = answer["recommend"]
    assert len(recommend["item_ids"]) == 5 and not set(recommend["item_ids"]) & set(session)
    assert recommend["request_id"] == "node-recommend-1"  # x-request-id sent, and echoed in trailing metadata
    assert recommend["model_version"]

    embeddings = answer["embeddings"]
    assert embeddings["item_ids"] == session and embeddings["unknown_item_ids"] == ["no-such-item"]
    assert embeddings["vector_bytes"] == 4 * embeddings["dim"] * len(session)  # packed float32 rows as a Buffer

    assert len(answer["ranked"]["item_ids"]) == 3 and set(answer["ranked"]["item_ids"]) <= set(recommend["item_ids"])
    assert answer["record_events"] == {"stored": len(session), "unknown_item_ids": []}
    assert answer["invalid_argument"]["code"] == 3  # INVALID_ARGUMENT, k out of range
    assert len(answer["recommend_from_events"]["item_ids"]) == 5  # the streamed events became the visitor's session
