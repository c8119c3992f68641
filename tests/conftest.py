"""Shared fixtures: a tiny trained bundle and a private Redis server, both once per test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc.experimental.aio import init_grpc_aio

from devtools.stack import free_port

# grpc.aio starts its poller thread with the first aio object and shuts it down (joining the thread) when the
# last one is freed. The tests create and drop servers and channels all session long, and that shutdown can
# deadlock (grpc/grpc#22365, #40989): seen here as a rare hang inside a test or after the last one. One reference
# taken on the main thread for the whole session keeps aio up, so it is never shut down mid-session.
init_grpc_aio()

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding one bundle trained on a small synthetic data set."""
    from recmesh.data.synth import generate
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    out = tmp_path_factory.mktemp("models")
    # A few seconds; quality is not under test here. 150 candidates, not the default 200, so that a service
    # which ignored the bundle's own count would be caught.
    params = TrainParams(word2vec=Word2VecParams(epochs=10), candidates=150)
    train_bundle(generate(n_items=2000, n_users=3000, seed=1), out, params, progress=False)
    return out


@pytest.fixture(scope="session")
def bundle_path(models_dir: Path) -> Path:
    from recmesh.bundle import resolve

    return resolve(models_dir)


@pytest.fixture(scope="session")
def model(bundle_path: Path):  # type: ignore[no-untyped-def]
    from recmesh.pipeline import load_model

    return load_model(bundle_path)


class RedisServer:
    """A private redis-server on a free port; stop()/start() let tests take Redis down and back up."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not found: install it with `apt-get install -y redis-server`")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
