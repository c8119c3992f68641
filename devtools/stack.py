"""The whole stack as local processes: Redis, the three services (with replicas), the gateway.

`LocalStack` is what `recmesh up`, the integration tests and the benchmarks start, so they run exactly what a user
runs. It starts the services by module name (`python -m services.ranking`): the runner sits above everything it
runs and imports none of it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.cpulimit import KUBERNETES_PERIOD_US, CpuLimit
from recmesh import bundle

SERVICES = ("embedding_store", "candidate_generation", "ranking")
REDIS_HINT = (
    "redis-server not found: install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) "
    "or `brew install redis` (macOS), or pass --redis-url to use a running Redis"
)


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a process about to start, taken below the kernel's ephemeral range. A port got
    by binding to 0 comes from that range, and an outgoing connection (a client of the stack) may take it before
    the process that should listen there has started: "Failed to bind", seen in CI."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randint(max(1024, low // 3), low - 1)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # nothing free below the range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grpc_serving(address: str, timeout: float = 0.5) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@dataclass
class Process:
    name: str
    address: str
    popen: subprocess.Popen[bytes]
    module: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpu_limit: CpuLimit | None = None  # its own cgroup, as a pod's container would have

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class LocalStack:
    models_dir: Path
    replicas: dict[str, int] = field(default_factory=dict)
    http_port: int = 0
    grpc_port: int = 0
    redis_url: str | None = None
    log_dir: Path | None = None
    cpu_limits: dict[str, float] = field(default_factory=dict)  # service -> cores per replica (cgroup quota)
    cpu_period_us: int = KUBERNETES_PERIOD_US  # the quota's accounting period
    processes: list[Process] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.log_dir = self.log_dir or Path(tempfile.mkdtemp(prefix="recmesh-logs-"))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start_redis(self) -> None:
        if self.redis_url:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(REDIS_HINT)
        port = free_port()
        self.redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.log_dir,
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        _wait(lambda: _tcp_open(port), 10, "redis-server")

    def spawn(self, name: str, module: str, env: dict[str, str], address: str, cpu_limit: float = 0) -> Process:
        limit = None
        if cpu_limit:
            limit = CpuLimit.create(f"recmesh-{os.getpid()}-{name}", cpu_limit, self.cpu_period_us)
        process = Process(name, address, self._popen(name, module, env, limit), module, env, limit)
        self.processes.append(process)
        return process

    def _popen(self, name: str, module: str, env: dict[str, str], limit: CpuLimit | None) -> subprocess.Popen[bytes]:
        assert self.log_dir is not None
        with (self.log_dir / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                [sys.executable, "-m", module], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        if limit is not None:
            limit.add(popen.pid)  # before the interpreter has started its threads: they inherit the cgroup
        return popen

    def kill(self, process: Process) -> None:
        """SIGKILL one process, as a crashed or OOM-killed pod: no drain, connections reset."""
        process.popen.kill()
        process.popen.wait()

    def restart(self, *processes: Process, timeout: float = 60.0) -> None:
        """Start stopped service processes again with the same command, address and limit (what the kubelet does
        after a crash), all at once, and wait until each serves."""
        for process in processes:
            if process.popen.poll() is None:
                raise RuntimeError(f"{process.name} is still running")
            process.popen = self._popen(process.name, process.module, process.env, process.cpu_limit)
        for process in processes:
            _wait(lambda p=process: grpc_serving(p.address) or self._died(p), timeout, process.name)

    def start(self, timeout: float = 60.0) -> LocalStack:
        """Redis, publish, the services, the gateway; all healthy within `timeout` s, or everything stopped."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        from recmesh.publish import publish

        self.start_redis()
        assert self.redis_url is not None
        publish(bundle.resolve(self.models_dir), self.redis_url, progress=False)
        common = {
            "RECMESH_MODELS_DIR": str(self.models_dir),
            "REDIS_URL": self.redis_url,
            "METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        addresses: dict[str, list[str]] = {}
        for service in SERVICES:
            for replica in range(self.replicas.get(service, 1)):
                address = f"127.0.0.1:{free_port()}"
                self.spawn(
                    f"{service}-{replica}",
                    f"services.{service}",
                    {**common, "PORT": address.rsplit(":", 1)[1]},
                    address,
                    self.cpu_limits.get(service, 0),
                )
                addresses.setdefault(service, []).append(address)
        gateway_env = {
            **common,
            "HTTP_PORT": str(self.http_port),
            "GRPC_PORT": str(self.grpc_port),
            "EMBEDDING_STORE_ADDR": ",".join(addresses["embedding_store"]),
            "CANDIDATE_GENERATION_ADDR": ",".join(addresses["candidate_generation"]),
            "RANKING_ADDR": ",".join(addresses["ranking"]),
        }
        self.spawn("gateway", "gateway", gateway_env, self.http_url, self.cpu_limits.get("gateway", 0))
        for process in self.processes[:-1]:
            _wait(lambda p=process: grpc_serving(p.address) or self._died(p), timeout, process.name)
        _wait(lambda: http_ok(self.http_url + "/readyz") or self._died(self.processes[-1]), timeout, "gateway")

    def _died(self, process: Process) -> bool:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}; see {self.log_dir}")
        return False

    def by_name(self, prefix: str) -> list[Process]:
        return [p for p in self.processes if p.name.startswith(prefix)]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
            if process.cpu_limit is not None:
                process.cpu_limit.remove()
        self.processes.clear()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(timeout=10)
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not healthy after {timeout:.0f}s")
