"""The error hierarchy and the status a server answers for an exception (serving.errors)."""

from __future__ import annotations

import logging

import grpc
import pytest

from recmesh.registry import VersionNotAvailable
from serving import errors, logs


class FailedCall(grpc.RpcError):
    """What a failed downstream grpc.aio call raises, reduced to its code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_errors_know_grpc_code_and_http_status():
    assert (errors.InvalidArgument.grpc_code, errors.InvalidArgument.http_status) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    assert errors.NotFound.http_status == 404
    assert errors.ResourceExhausted.http_status == 429
    assert errors.FailedPrecondition.http_status == 409
    assert errors.Unavailable.http_status == 503
    assert errors.DeadlineExceeded.http_status == 504
    assert errors.RecmeshError.grpc_code == grpc.StatusCode.INTERNAL
    assert all(issubclass(c, errors.RecmeshError) for c in (errors.NotFound, errors.Unavailable))


def test_a_subclass_keeps_its_parents_statuses_unless_it_names_its_own():
    class StoreDown(errors.Unavailable):
        pass

    class Gone(errors.NotFound, http_status=410):
        pass

    assert (StoreDown.grpc_code, StoreDown.http_status) == (grpc.StatusCode.UNAVAILABLE, 503)
    assert (Gone.grpc_code, Gone.http_status) == (grpc.StatusCode.NOT_FOUND, 410)
    assert errors.NotFound.http_status == 404
    assert StoreDown().message == "StoreDown" and errors.NotFound("v7").message == "v7"


def test_rpc_status_of_known_errors_is_their_code_and_message():
    where = "/recmesh.v1.RankingService/Rank"
    assert errors.rpc_status(errors.InvalidArgument("k must be >= 0"), where) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "k must be >= 0",
    )
    downstream = FailedCall(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
    assert errors.rpc_status(downstream, where) == (grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
    missing = VersionNotAvailable("model version 'v9' is not loaded here and not on disk")
    assert errors.rpc_status(missing, where) == (grpc.StatusCode.NOT_FOUND, str(missing))


def test_rpc_status_of_anything_else_is_internal_naming_only_the_request_id(caplog):
    token = logs.set_request_id("req-9")
    try:
        with caplog.at_level(logging.ERROR, logger="serving.errors"):
            code, details = errors.rpc_status(KeyError("secret"), "/x.Y/Z")
    finally:
        logs.request_id_var.reset(token)
    assert (code, details) == (grpc.StatusCode.INTERNAL, "internal error (request_id=req-9)")
    assert caplog.records[0].exc_info and "/x.Y/Z" in caplog.records[0].getMessage()
    assert errors.rpc_status(errors.RecmeshError("bug"), "/x.Y/Z") == (grpc.StatusCode.INTERNAL, "internal error")
    # A downstream code with no error class of its own is a bug of ours, not the caller's.
    assert errors.rpc_status(FailedCall(grpc.StatusCode.UNIMPLEMENTED, "no"), "/x.Y/Z")[0] == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE])
def test_from_rpc_error_keeps_the_code(code):
    err = errors.from_rpc_error(FailedCall(code, ""))
    assert err.grpc_code == code and err.message == f"downstream call failed: {code.name}"


def test_an_invalid_argument_names_its_fields():
    one = errors.InvalidArgument("k must be >= 0", field="k")
    assert one.violations == (errors.FieldViolation("k", "k must be >= 0"),)
    assert errors.InvalidArgument("no field").violations == ()
    many = [errors.FieldViolation("a", "bad a"), errors.FieldViolation("b[2]", "bad b")]
    assert errors.InvalidArgument("two", violations=many).violations == tuple(many)


def test_details_in_json_and_in_the_grpc_trailer_round_trip():
    bad = errors.InvalidArgument("k must be >= 0", field="k")
    assert errors.json_details(bad) == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "k", "description": "k must be >= 0"}],
        }
    ]
    trailer = errors.status_trailer(bad, grpc.StatusCode.INVALID_ARGUMENT, bad.message)
    assert trailer[0][0] == "grpc-status-details-bin"
    assert errors.details_of_trailer(trailer) == (bad.violations, None)
    busy = errors.ResourceExhausted("slow down", retry_after_s=0.25)
    assert errors.json_details(busy) == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.25s"}]
    assert errors.retry_after_header(busy) == "1"  # whole seconds, at least one
    trailer = errors.status_trailer(busy, grpc.StatusCode.RESOURCE_EXHAUSTED, busy.message)
    assert errors.details_of_trailer(trailer) == ((), 0.25)


def test_no_details_no_trailer_and_never_for_internal_errors():
    assert errors.status_trailer(errors.NotFound("v7"), grpc.StatusCode.NOT_FOUND, "v7") == ()
    assert errors.status_trailer(None, grpc.StatusCode.INTERNAL, "internal error") == ()
    assert errors.details_of_trailer(None) == ((), None)
    assert errors.retry_after_header(errors.Unavailable("down")) is None
