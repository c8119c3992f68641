"""The gateway's use cases wired to one set of backends: what the REST app and the gRPC servicer both serve.

No web framework and no grpc servicer here nor in the use cases: inputs are plain values, outputs dataclasses,
errors from :mod:`serving.errors` (which the adapters map to HTTP statuses and gRPC codes in one place each).

    core = GatewayCore.build(clients, ModelVersions(models_dir), default_budget_ms=200)
    rec = await core.recommender.recommend(RecommendRequest(["a", "b"]))
    answer = await core.stages.similar_items("a", k=10, model_version="")
    recorded = await core.events.record(events, max_events=limits.MAX_EVENTS_PER_CALL, unit="call")
    written = await core.items.upsert([("a", {"available": False})], merge=True)
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clients import Clients
from gateway.item_catalog import ItemCatalog
from gateway.model_versions import ModelVersions
from gateway.recommend import Recommender
from gateway.recording import EventRecorder
from gateway.stages import Stages


@dataclass(frozen=True)
class GatewayCore:
    clients: Clients
    versions: ModelVersions
    recommender: Recommender
    stages: Stages
    events: EventRecorder
    items: ItemCatalog

    @classmethod
    def build(cls, clients: Clients, versions: ModelVersions, default_budget_ms: int) -> GatewayCore:
        return cls(
            clients,
            versions,
            Recommender(clients, versions, default_budget_ms),
            Stages(clients, versions, default_budget_ms),
            EventRecorder(clients.events, versions, default_budget_ms),
            ItemCatalog(clients.catalog, versions),
        )
