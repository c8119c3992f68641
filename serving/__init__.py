"""Helpers shared by the recmesh gRPC services and the gateway.

- ``errors``: the error hierarchy (each error knows its gRPC code and HTTP status) and ``@grpc_errors``.
- ``logs``: JSON logging and the request id carried across hops.
- ``metrics``: Prometheus metric families, ``@observe_rpc`` and the /metrics server.
- ``server``: ``create_server`` / ``serve_until_signal`` and ``make_channel`` for clients.
- ``vectors``: packed float32 wire format for vectors.

Import the submodules directly; this package imports nothing on its own.
"""
