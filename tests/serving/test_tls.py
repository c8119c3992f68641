"""Mutual TLS between the gateway and the stages (serving/tls.py): real services on loopback with throwaway
certificates; a client without a certificate from the CA is refused, the gateway with its own is served."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.stack import free_port
from recmesh.v1 import ranking_service_pb2, ranking_service_pb2_grpc
from serving.tls import TlsFiles, channel_credentials
from tests.gateway.conftest import stop_within
from tests.gateway.harness import STAGES, Stage, running_gateway
from tests.serving.certs import CertificateAuthority

session_loop = pytest.mark.asyncio(loop_scope="session")


class Mesh:
    def __init__(self, ca: TlsFiles, gateway: TlsFiles, stranger: TlsFiles) -> None:
        self.ca_files, self.gateway, self.stranger = ca, gateway, stranger
        self.ports: dict[str, int] = {}
        self.health_ports: dict[str, int] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(models_dir: Path, redis_server, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    """The three stages with mutual TLS (and a plaintext health port each), and the certificates around them."""
    root = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority.create("recmesh test CA")
    server = ca.issue(root / "stages", "stages", dns=["localhost"], ips=["127.0.0.1"])
    other_ca = CertificateAuthority.create("someone else's CA")
    mesh = Mesh(server, ca.issue(root / "gateway", "gateway"), other_ca.issue(root / "stranger", "gateway"))
    stages = {}
    for name in STAGES:
        settings_cls = importlib.import_module(f"services.{name}.settings").Settings
        mesh.health_ports[name] = free_port()
        settings = settings_cls(
            RECMESH_MODELS_DIR=str(models_dir),
            REDIS_URL=redis_server.url,
            TLS_CERT_FILE=str(server.cert),
            TLS_KEY_FILE=str(server.key),
            TLS_CA_FILE=str(server.ca),
            HEALTH_PORT=mesh.health_ports[name],
        )
        create_server = importlib.import_module(f"services.{name}.server").create_server
        started, port, _health, core = await create_server(settings, "127.0.0.1:0")
        stages[name] = Stage(started, port, core)
        mesh.ports[name] = port
    yield mesh
    for name, stage in stages.items():
        await stop_within(stage.stop(), f"the {name} service")


async def _health(channel: grpc.aio.Channel) -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as e:
        return e.code().name  # type: ignore[no-any-return]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)  # type: ignore[no-any-return]


def _tls(files: TlsFiles, with_cert: bool = True) -> grpc.ChannelCredentials:
    if with_cert:
        return channel_credentials(files)
    return grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes())


@session_loop
async def test_the_gateway_with_its_certificate_is_served(  # type: ignore[no-untyped-def]
    mesh: Mesh, models_dir: Path, redis_server, model
) -> None:
    rows, _ = model.popular(10)
    session_items = [model.item_ids[r] for r in rows[[3, 5]]]
    g = mesh.gateway
    tls = {"tls_cert_file": g.cert, "tls_key_file": g.key, "tls_ca_file": g.ca}
    async with running_gateway(models_dir, redis_server.url, mesh.ports, **tls) as gateway:
        answer = await gateway.recommend(session=session_items, k=5)  # asserts not degraded: every hop answered
        assert len(answer["items"]) == 5


@session_loop
async def test_a_client_without_a_certificate_from_the_ca_is_refused(mesh: Mesh) -> None:
    address = f"127.0.0.1:{mesh.ports['ranking']}"
    async with grpc.aio.secure_channel(address, _tls(mesh.gateway)) as channel:
        assert await _health(channel) == "SERVING"
    async with grpc.aio.insecure_channel(address) as channel:
        assert await _health(channel) == "UNAVAILABLE"  # plaintext: no TLS handshake
    async with grpc.aio.secure_channel(address, _tls(mesh.gateway, with_cert=False)) as channel:
        assert await _health(channel) == "UNAVAILABLE"  # TLS, but no client certificate
    async with grpc.aio.secure_channel(address, _tls(mesh.stranger)) as channel:
        assert await _health(channel) == "UNAVAILABLE"  # a certificate, from another CA


@session_loop
async def test_the_plaintext_health_port_serves_health_only(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.health_ports['ranking']}") as channel:
        assert await _health(channel) == "SERVING"
        stub = ranking_service_pb2_grpc.RankingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            await stub.Rank(ranking_service_pb2.RankRequest(session_item_ids=["a"]), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
