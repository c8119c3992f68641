"""The recmesh gateway: REST/JSON (FastAPI) and gRPC (recmesh.v1.RecommendationService) over one core.

Run with ``python -m gateway``. A request's path, and the module that does each job:

- the faces: ``app.py`` (REST routes; ``middleware.py``, ``edge.py`` (read timeouts, load shedding, JSON
  only), ``fast_path.py`` (POST /v1/recommend without the framework's layers), ``schemas.py``,
  ``rest_errors.py``, ``json_response.py``) and ``grpc_api.py`` (gRPC servicer); they turn the wire into plain
  values and back;
- ``checks.py``: every range, cap and id length of the public API (numbers from ``serving/limits.py``), once;
- the use cases, wired together in ``core.py``: ``recommend.py`` (a recommendation, its hops in ``hops.py``, its
  catalogue options (filter, boosts, pins, diversity) in ``rules.py``), ``stages.py`` (every stage on its own),
  ``recording.py`` (recording events), ``item_catalog.py`` (the live item catalogue's API); A/B experiments:
  ``experiments.py`` (the running one, followed from Redis, and a request's variant), ``experiment_counts.py``
  (impressions and the variants' counters);
- the backends: ``clients.py`` (the three stage services; each call alone or batched with others:
  ``stage_client.py``, ``batching.py``), ``event_store.py`` (visitors' events in Redis; ``events.py`` says what
  a valid event is), ``model_versions.py`` (what the gateway reads from bundles),
  ``version_pointer.py`` (following Redis' published version), ``readiness.py`` (/readyz), and the live item
  catalogue (``serving/catalog_live.py``, on ``Clients.catalog``);
- ``auth.py``: who may call what (API keys, scopes, per-key rate limits; docs/security.md), checked by
  ``auth_http.py`` (REST) and ``auth_grpc.py`` (gRPC);
- ``budget.py`` keeps time; ``settings.py`` reads the environment.

docs/architecture.md describes the design.
"""
