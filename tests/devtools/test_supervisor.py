"""LocalStack.supervise(): a crashed process comes back (with backoff), Redis on the same port with its data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from devtools import stack as stack_module
from devtools.stack import LocalStack, Restarts


def test_backoff_doubles_up_to_the_cap_and_starts_again_once_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    restarts = Restarts(started=0.0)
    delays = [restarts.crashed(now=1.0) for _ in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == stack_module.RESTART_BACKOFF_CAP_S
    restarts.started = 100.0  # up a long while since its last start
    assert restarts.crashed(now=100.0 + stack_module.STABLE_AFTER_S + 1) == stack_module.RESTART_BACKOFF_S


def _supervise_until(stack: LocalStack, done, timeout: float = 20.0) -> list[str]:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines += stack.supervise()
        if done():
            return lines
        time.sleep(0.05)
    raise AssertionError(f"not done after {timeout}s; supervise said {lines}")


def test_a_killed_process_is_restarted_with_a_log_line(tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(600)\n")
    logged: list[str] = []
    stack = LocalStack(tmp_path, log_dir=tmp_path, log=logged.append)
    try:
        process = stack.spawn("sleeper", "sleeper", {"PYTHONPATH": str(tmp_path)}, "-")
        first = process.popen.pid
        stack.kill(process)
        lines = _supervise_until(stack, lambda: process.popen.poll() is None and process.popen.pid != first)
        assert lines[0].startswith("sleeper exited (-9); restarting in 0.5s")
        assert lines[-1] == "sleeper restarted" and logged == lines
        stack.kill(process)  # a second crash in a row waits twice as long
        started = time.monotonic()
        lines = _supervise_until(stack, lambda: process.popen.poll() is None)
        assert "restarting in 1.0s" in lines[0] and time.monotonic() - started >= 0.9
    finally:
        stack.stop()


def test_a_killed_store_redis_comes_back_on_its_port_with_every_acknowledged_write(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, log_dir=tmp_path)
    try:
        stack.start_redis()
        assert stack.redis_url != stack.redis_cache_url  # two roles, two servers
        store = redis.Redis.from_url(stack.redis_url)
        config = store.config_get("*")
        assert (config["appendonly"], config["appendfsync"], config["maxmemory-policy"]) == (
            "yes",
            "always",
            "noeviction",
        )
        assert redis.Redis.from_url(stack.redis_cache_url).config_get("maxmemory-policy") == {
            "maxmemory-policy": "allkeys-lru"
        }
        for i in range(200):
            store.lpush("recmesh:events:u1", f"e{i}")  # each acknowledged: fsynced to the AOF first
        stack.kill(stack.redis_server("store"))
        _supervise_until(stack, lambda: stack.redis_server("store").running())
        assert store.llen("recmesh:events:u1") == 200  # same URL: the client reconnects to the reloaded AOF
    finally:
        stack.stop()
