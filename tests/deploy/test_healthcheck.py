"""`python -m serving.healthcheck`, the compose health check of the gRPC services."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving import healthcheck


def test_healthcheck_exits_0_only_while_the_server_is_serving() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main([target]) == 0
        assert healthcheck.main([target, "--service", "recmesh.v1.Nope"]) == 1  # NOT_FOUND
        servicer.enter_graceful_shutdown()
        assert healthcheck.check(target) == (False, "NOT_SERVING")
        assert healthcheck.main([target]) == 1
    finally:
        server.stop(None)
    assert healthcheck.main([target, "--timeout", "0.2"]) == 1  # nobody listening
