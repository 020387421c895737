"""Domain errors become the gRPC status codes DESIGN.md principle 8 promises."""

from __future__ import annotations

import grpc
import pytest

from fleet.api.errors import status_for
from fleet.custody.people import AuthenticationFailed
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied


@pytest.mark.parametrize(
    ("exc", "code", "details"),
    [
        (
            InvalidArgument("quantity", "must be at least 1"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "quantity: must be at least 1",
        ),
        (NotFound("order ORD-9 not found"), grpc.StatusCode.NOT_FOUND, "order ORD-9 not found"),
        (
            FailedPrecondition("order is DELIVERED"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "order is DELIVERED",
        ),
        (
            PermissionDenied("n1 may not approve"),
            grpc.StatusCode.PERMISSION_DENIED,
            "n1 may not approve",
        ),
        (
            AuthenticationFailed("n1", "badge or PIN not accepted"),
            grpc.StatusCode.UNAUTHENTICATED,
            "badge or PIN not accepted",
        ),
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
def test_status_for(exc: BaseException, code: grpc.StatusCode, details: str) -> None:
    got_code, got_details = status_for(exc)
    assert got_code is code
    assert details in got_details
    assert "secret" not in got_details
