"""Exit 0 if a gRPC server reports SERVING, 1 otherwise: a container health check with no extra binary.

    python -m serving.healthcheck localhost:50053            # overall server health
    python -m serving.healthcheck localhost:50053 --service recmesh.v1.RankingService

It calls grpc.health.v1.Health/Check with a 1 s deadline (docker-compose's `healthcheck`; Kubernetes uses its
native gRPC probe instead). A server that is draining after SIGTERM answers NOT_SERVING, so it fails here too.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout_s: float = 1.0) -> tuple[bool, str]:
    """(True, "SERVING") if `target` reports SERVING for `service`; else (False, what it said or why not)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as err:
            return False, f"{err.code().name}: {err.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.healthcheck",
        description="Exit 0 if a gRPC server reports SERVING (grpc.health.v1), 1 otherwise.",
    )
    parser.add_argument("target", help="host:port of the gRPC server, e.g. localhost:50051")
    parser.add_argument("--service", default="", help="service name to check; empty = the whole server")
    parser.add_argument("--timeout", type=float, default=1.0, help="deadline in seconds (default 1)")
    args = parser.parse_args(argv)
    ok, status = check(args.target, args.service, args.timeout)
    print(f"{args.target} {args.service or '<server>'}: {status}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
