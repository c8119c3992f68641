"""The whole stack as local processes: two Redis servers, the three services (with replicas), the gateway.

`LocalStack` is what `recmesh up`, the integration tests and the benchmarks start, so they run exactly what a user
runs. It starts the services by module name (`python -m services.ranking`): the runner sits above everything it
runs and imports none of it (but gateway.auth, to make a dev API key when ``auth=True``: ``recmesh up``).

Redis plays two roles, each its own redis-server because eviction and persistence are per instance
(docs/reliability.md): the *store* (visitors' events, the version pointer: AOF with ``appendfsync always``,
``noeviction``) and the *cache* (item vectors: ``allkeys-lru``, no persistence). `supervise()` restarts a process
that died (Redis on the same port and data directory, so the AOF reloads), with exponential backoff.

    stack = LocalStack(models_dir).start()
    while running: stack.supervise(); time.sleep(0.5)   # what `recmesh up` does
    stack.kill(stack.by_name("ranking")[0])             # a crash; the next supervise() restarts it
"""

from __future__ import annotations

import functools
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
from collections.abc import Callable
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


# The two roles' settings (docs/reliability.md says why). maxmemory bounds each; the store refuses writes when
# full (the gateway answers 503) rather than evict an acknowledged event, the cache evicts what was used least.
STORE_MAXMEMORY = "256mb"
CACHE_MAXMEMORY = "256mb"
STORE_ARGS = (
    "--appendonly", "yes", "--appendfsync", "always", "--save", "",
    "--maxmemory", STORE_MAXMEMORY, "--maxmemory-policy", "noeviction",
)  # fmt: skip
CACHE_ARGS = ("--appendonly", "no", "--save", "", "--maxmemory", CACHE_MAXMEMORY, "--maxmemory-policy", "allkeys-lru")

RESTART_BACKOFF_S = 0.5  # first restart delay of a crashed process; doubles per crash in a row
RESTART_BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 30.0  # a process up this long has recovered: its next crash starts the backoff again


@dataclass
class Restarts:
    """When a crashed process may be started again: exponential backoff, reset once it stays up."""

    count: int = 0
    due: float = 0.0  # monotonic time of the next start; 0 = not waiting
    started: float = field(default_factory=time.monotonic)

    def delay(self) -> float:
        return min(RESTART_BACKOFF_S * 2**self.count, RESTART_BACKOFF_CAP_S)

    def crashed(self, now: float) -> float:
        """Schedule the next start; returns the delay."""
        if now - self.started > STABLE_AFTER_S:
            self.count = 0
        delay = self.delay()
        self.count += 1
        self.due = now + delay
        return delay


@dataclass
class RedisServer:
    """One private redis-server: a role ("store" or "cache"), a fixed port and a data directory, so a restart
    after a crash reloads the store's AOF."""

    role: str
    port: int
    data_dir: Path
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes] | None = None
    restarts: Restarts = field(default_factory=Restarts)

    @property
    def name(self) -> str:
        return f"redis-{self.role}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(REDIS_HINT)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "redis.log").open("ab") as log:
            self.popen = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )
        self.restarts.started = time.monotonic()
        _wait(lambda: _redis_answers(self.port) or self._died(), timeout, self.name)

    def _died(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.data_dir / 'redis.log'}")
        return False

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Process:
    name: str
    address: str
    popen: subprocess.Popen[bytes]
    module: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpu_limit: CpuLimit | None = None  # its own cgroup, as a pod's container would have
    restarts: Restarts = field(default_factory=Restarts)

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
    redis_url: str | None = None  # the durable store (events, version pointer); None = start a private one
    log_dir: Path | None = None
    cpu_limits: dict[str, float] = field(default_factory=dict)  # service -> cores per replica (cgroup quota)
    cpu_period_us: int = KUBERNETES_PERIOD_US  # the quota's accounting period
    processes: list[Process] = field(default_factory=list)
    redis_cache_url: str | None = None  # the vector cache; None = a private one (or redis_url when that is given)
    redis_servers: list[RedisServer] = field(default_factory=list)
    log: Callable[[str], None] = field(default=lambda line: None)  # supervise() reports restarts here
    # True: the gateway checks API keys from a keys file written in log_dir, holding one generated key with every
    # scope (api_key; what `recmesh up` prints). False: the gateway runs with AUTH=disabled (tests, benchmarks
    # about something else).
    auth: bool = False
    api_key: str | None = None

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
        """The store and the cache as private redis-servers, unless URLs were given (a given store URL alone
        serves both roles, as before)."""
        assert self.log_dir is not None
        if self.redis_url:
            self.redis_cache_url = self.redis_cache_url or self.redis_url
            return
        for role, args in (("store", STORE_ARGS), ("cache", CACHE_ARGS)):
            server = RedisServer(role, free_port(), self.log_dir / f"redis-{role}", args)
            server.start()
            self.redis_servers.append(server)
        self.redis_url = self.redis_servers[0].url
        self.redis_cache_url = self.redis_cache_url or self.redis_servers[1].url

    def redis_server(self, role: str) -> RedisServer:
        """The private redis-server of ``role`` ("store" or "cache")."""
        return next(s for s in self.redis_servers if s.role == role)

    @property
    def redis(self) -> subprocess.Popen[bytes] | None:
        """The private store's process (None when Redis was given by URL)."""
        return self.redis_servers[0].popen if self.redis_servers else None

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

    def kill(self, process: Process | RedisServer) -> None:
        """SIGKILL one process, as a crashed or OOM-killed pod: no drain, connections reset."""
        assert process.popen is not None
        process.popen.kill()
        process.popen.wait()

    def supervise(self) -> list[str]:
        """Restart every process (Redis included) that has exited, each with exponential backoff
        (RESTART_BACKOFF_S doubling up to RESTART_BACKOFF_CAP_S, reset after STABLE_AFTER_S up); call it
        periodically. Never waits for a backoff: a process whose delay has not passed is left for a later
        call. Returns (and logs) one line per crash noticed or restart made."""
        lines: list[str] = []
        now = time.monotonic()
        for server in self.redis_servers:
            if server.popen is None or server.popen.poll() is None:
                continue
            lines += self._restart_when_due(server, server.popen.returncode, now, server.start)
        for process in self.processes:
            if process.popen.poll() is None:
                continue
            lines += self._restart_when_due(
                process, process.popen.returncode, now, functools.partial(self._respawn, process)
            )
        for line in lines:
            self.log(line)
        return lines

    def _restart_when_due(
        self, what: Process | RedisServer, code: int, now: float, start: Callable[[], object]
    ) -> list[str]:
        lines = []
        if not what.restarts.due:
            delay = what.restarts.crashed(now)
            lines.append(f"{what.name} exited ({code}); restarting in {delay:.1f}s (restart {what.restarts.count})")
        if now >= what.restarts.due:
            what.restarts.due = 0.0
            try:
                start()
            except (OSError, RuntimeError, TimeoutError) as e:  # it died again at once: the next call backs off
                lines.append(f"{what.name} failed to start: {e}")
                return lines
            lines.append(f"{what.name} restarted")
        return lines

    def _respawn(self, process: Process) -> None:
        process.popen = self._popen(process.name, process.module, process.env, process.cpu_limit)
        process.restarts.started = time.monotonic()

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
        assert self.redis_url is not None and self.redis_cache_url is not None
        publish(bundle.resolve(self.models_dir), self.redis_url, progress=False, cache_url=self.redis_cache_url)
        common = {
            "RECMESH_MODELS_DIR": str(self.models_dir),
            "REDIS_URL": self.redis_url,
            "REDIS_CACHE_URL": self.redis_cache_url,
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
            **self._auth_env(),
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

    def _auth_env(self) -> dict[str, str]:
        """The gateway's AUTH / AUTH_KEYS_FILE: a fresh dev key (all scopes) in a file only we can read, or
        auth explicitly off."""
        if not self.auth:
            return {"AUTH": "disabled"}
        from gateway.auth import write_dev_keys

        assert self.log_dir is not None
        path = self.log_dir / "api-keys.json"
        self.api_key = write_dev_keys(path)
        return {"AUTH": "keys", "AUTH_KEYS_FILE": str(path)}

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header that carries the dev key ({} when auth is off)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

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
        for server in self.redis_servers:
            server.stop()
        self.redis_servers.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_answers(port: int) -> bool:
    """PING answered PONG: up, and done loading its AOF (while loading it answers -LOADING)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not healthy after {timeout:.0f}s")
