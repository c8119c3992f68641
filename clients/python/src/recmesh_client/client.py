"""A typed, synchronous client of the gateway's gRPC API (recmesh.v1.RecommendationService).

    from recmesh_client import RecmeshClient, event

    with RecmeshClient("localhost:50050", timeout=1.0) as client:
        reply = client.recommend(["item-1", "item-2"], k=10)
        print([(i.item_id, i.score) for i in reply.items], reply.model_version)
        client.record_events([event("user-1", "item-3", "click"), event("user-1", "item-4")])

Every call has a deadline (the client's ``timeout`` unless the call gives its own), sends the client's default
metadata (e.g. an API key or an authorization header your proxy checks) and an ``x-request-id`` (the call's
``request_id`` or a fresh one) that the gateway logs and passes to every stage. A failed call raises
:class:`RecmeshError` carrying the status code, the server's message and that request id. Answers are the
generated protobuf messages of ``recmesh.v1`` (their .pyi stubs type every field).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from recmesh.v1 import catalog_pb2, common_pb2
from recmesh.v1 import recommendation_service_pb2 as pb
from recmesh.v1 import recommendation_service_pb2_grpc as pb_grpc
from recmesh_client.errors import RecmeshError

REQUEST_ID_KEY = "x-request-id"
Metadata = Sequence[tuple[str, str]]
Reply = TypeVar("Reply")

EVENT_TYPES = {
    "view": common_pb2.EVENT_TYPE_VIEW,
    "click": common_pb2.EVENT_TYPE_CLICK,
    "add_to_cart": common_pb2.EVENT_TYPE_ADD_TO_CART,
    "purchase": common_pb2.EVENT_TYPE_PURCHASE,
}


def event(
    user_id: str, item_id: str, kind: str = "view", timestamp_ms: int = 0, session_id: str = ""
) -> common_pb2.Event:
    """One interaction; ``kind`` is view, click, add_to_cart or purchase; timestamp 0 = when the gateway gets it."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
    return common_pb2.Event(
        user_id=user_id, item_id=item_id, type=EVENT_TYPES[kind], timestamp_ms=timestamp_ms, session_id=session_id
    )


class RecmeshClient:
    """One channel to the gateway's gRPC port; thread-safe, meant to be kept for the life of the program.

    ``target`` is host:port; ``credentials`` (grpc.ssl_channel_credentials()) makes it TLS; ``timeout`` is
    each call's deadline in seconds; ``metadata`` is sent with every call.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 1.0,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=list(options))
        else:
            self.channel = grpc.secure_channel(target, credentials, options=list(options))
        self.stub = pb_grpc.RecommendationServiceStub(self.channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RecmeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the calls ---------------------------------------------------------------------------------------

    def recommend(
        self,
        session_item_ids: Sequence[str] = (),
        *,
        user_id: str = "",
        k: int = 0,
        options: pb.RecommendOptions | None = None,
        model_version: str = "",
        session_id: str = "",
        forced_variant: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.RecommendResponse:
        """Recommendations for a session (or, with no session items, for ``user_id``'s recorded events).
        k 0 = the default (10); ``options`` tunes the stages and the catalogue rules
        (pb.RecommendOptions(filter='category == "books"', explain=True, ...)); ``session_id`` assigns an anonymous
        visitor to the running experiment's variant (``forced_variant``: QA). The reply names the experiment and
        variant; send its ``recommendation_id`` as the session_id of the visitor's next events."""
        request = pb.RecommendRequest(
            session_item_ids=session_item_ids,
            user_id=user_id,
            k=k,
            model_version=model_version,
            options=options,
            session_id=session_id,
            forced_variant=forced_variant,
        )
        return self._call(self.stub.Recommend, request, timeout, request_id)

    def item_embeddings(
        self,
        item_ids: Sequence[str],
        *,
        model_version: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.GetItemEmbeddingsResponse:
        """The vectors of the known items (recmesh_client.vectors.unpack_rows(reply.vectors, reply.dim))."""
        request = pb.GetItemEmbeddingsRequest(item_ids=item_ids, model_version=model_version)
        return self._call(self.stub.GetItemEmbeddings, request, timeout, request_id)

    def similar_items(
        self,
        item_id: str,
        *,
        k: int = 0,
        model_version: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.GetSimilarItemsResponse:
        """The items most similar to ``item_id`` (never itself); NOT_FOUND if it is unknown."""
        request = pb.GetSimilarItemsRequest(item_id=item_id, k=k, model_version=model_version)
        return self._call(self.stub.GetSimilarItems, request, timeout, request_id)

    def find_candidates(
        self,
        *,
        item_ids: Sequence[str] = (),
        query_vector: bytes = b"",
        k: int = 0,
        exclude_item_ids: Sequence[str] = (),
        model_version: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.FindCandidatesResponse:
        """Nearest items for item ids or a packed query vector (exactly one of them)."""
        request = pb.FindCandidatesRequest(
            item_ids=item_ids,
            query_vector=query_vector,
            k=k,
            exclude_item_ids=exclude_item_ids,
            model_version=model_version,
        )
        return self._call(self.stub.FindCandidates, request, timeout, request_id)

    def rank_candidates(
        self,
        candidates: Iterable[tuple[str, float]],
        *,
        session_item_ids: Sequence[str] = (),
        k: int = 0,
        model_version: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.RankCandidatesResponse:
        """Orders (item id, retrieval score) pairs for the session, best first; k 0 = all of them."""
        request = pb.RankCandidatesRequest(
            session_item_ids=session_item_ids,
            candidates=[common_pb2.ItemScore(item_id=i, score=s) for i, s in candidates],
            k=k,
            model_version=model_version,
        )
        return self._call(self.stub.RankCandidates, request, timeout, request_id)

    def record_event(
        self, event: common_pb2.Event, *, timeout: float | None = None, request_id: str | None = None
    ) -> pb.RecordEventResponse:
        """Stores one interaction; the visitor's next recommend(user_id=...) reflects it."""
        return self._call(self.stub.RecordEvent, pb.RecordEventRequest(event=event), timeout, request_id)

    def record_events(
        self,
        events: Iterable[common_pb2.Event],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> pb.RecordEventsResponse:
        """Streams the events (at most 10000) in one call; all are validated together, so one bad event stores
        nothing. ``events`` may be a generator: it is consumed while the call runs."""
        stream = (pb.RecordEventRequest(event=e) for e in events)
        return self._call(self.stub.RecordEvents, stream, timeout, request_id)

    # ---- the live item catalogue -------------------------------------------------------------------------

    def upsert_items(
        self,
        items: Mapping[str, Mapping[str, Any]],
        *,
        merge: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> catalog_pb2.UpsertItemsResponse:
        """Writes up to 1000 items ({item_id: {attribute: str | float | bool}}) in one atomic call: replaced, or
        with ``merge`` only the given attributes changed (None removes one). Every replica's next answer sees it."""
        request = catalog_pb2.UpsertItemsRequest(merge=merge)
        for item_id, attributes in items.items():
            item = request.items.add(item_id=item_id)
            item.attributes.update(dict(attributes))
        return self._call(self.stub.UpsertItems, request, timeout, request_id)

    def get_item(
        self, item_id: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> catalog_pb2.GetItemResponse:
        """One item's attributes (reply.item.attributes, a Struct: dict(...) of it) and whether the model knows it."""
        return self._call(self.stub.GetItem, catalog_pb2.GetItemRequest(item_id=item_id), timeout, request_id)

    def delete_items(
        self, item_ids: Sequence[str], *, timeout: float | None = None, request_id: str | None = None
    ) -> catalog_pb2.DeleteItemsResponse:
        """Removes the items' catalogue entries (the model still knows them)."""
        request = catalog_pb2.DeleteItemsRequest(item_ids=item_ids)
        return self._call(self.stub.DeleteItems, request, timeout, request_id)

    # ---- plumbing ----------------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Reply], request: Any, timeout: float | None, request_id: str | None) -> Reply:
        request_id = request_id or uuid.uuid4().hex
        metadata = (*self.metadata, (REQUEST_ID_KEY, request_id))
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise RecmeshError.from_rpc_error(error, request_id) from None
