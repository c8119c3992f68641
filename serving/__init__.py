"""The serving kit shared by the recmesh gRPC services and the gateway.

- ``batch``: answering a batch call of a stage service (BatchRank, ...), member by member; MAX_BATCH_MEMBERS.
- ``channels``: client channels to one or several replicas (round_robin, retries on UNAVAILABLE).
- ``errors``: the error hierarchy (each error knows its gRPC code and HTTP status) and ``rpc_status``.
- ``healthcheck``: ``python -m serving.healthcheck host:port``, a container health check.
- ``interceptor``: the one server interceptor: request id, metrics and error status for every RPC.
- ``limits``: every cap and default of the public API.
- ``logs``: JSON logging and the request id carried across hops.
- ``metrics``: Prometheus metric families and the /metrics server.
- ``server``: ``create_server`` (with the interceptor) / ``serve_until_signal`` / ``shutdown``.
- ``settings``: ``CommonSettings``, the environment every process reads.
- ``stage_service``: start-up and entry point shared by the three stage services.
- ``tracing``: OpenTelemetry, off unless the OTEL_* variables ask: provider, interceptors, middleware, Redis.
- ``vectors``: the packed float32 wire format for vectors and scores.

Handlers raise ``serving.errors`` classes; the interceptor turns them into statuses. How the pieces fit:
docs/architecture.md. Import the submodules directly; this package imports nothing on its own.
"""
