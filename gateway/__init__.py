"""The recmesh gateway: REST/JSON (FastAPI) and gRPC (recmesh.v1.RecommendationService) over one core.

Request path: app.py / grpc_api.py (adapters) -> core.py (orchestration) -> clients.py (the three stage services)
+ events.py (Redis) + popular.py (what the gateway reads from bundles); budget.py keeps time. Run with
``python -m gateway``.
"""
