"""Domain errors -> gRPC status codes (DESIGN.md principle 8).

- `InvalidArgument` -> INVALID_ARGUMENT, details `"<field>: <reason>"`;
- `NotFound` -> NOT_FOUND; `FailedPrecondition` -> FAILED_PRECONDITION;
- `PermissionDenied` (a role may not do this) -> PERMISSION_DENIED;
- `AuthenticationFailed` (badge or PIN not accepted, credential locked) -> UNAUTHENTICATED;
- anything else -> INTERNAL, logged with its traceback (the caller sees no internals).

`grpc_errors` decorates unary servicer methods; streaming methods call `abort_for` themselves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
import grpc.aio

from fleet.custody.people import AuthenticationFailed
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details a client gets for `exc`."""
    if isinstance(exc, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field}: {exc.reason}"
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, FailedPrecondition):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, AuthenticationFailed):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """Abort the call with the status for `exc` (logging it when it is not a domain error)."""
    code, details = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error in a gRPC call", exc_info=exc)
    await context.abort(code, details)


def is_abort(exc: BaseException) -> bool:
    """True for the exception `context.abort` raises, which must propagate untouched."""
    return isinstance(exc, grpc.aio.AbortError)


def grpc_errors(method: F) -> F:
    """Decorate an async unary servicer method `(self, request, context)` to map errors."""

    @functools.wraps(method)
    async def wrapper(self: object, request: object, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if is_abort(exc):
                raise
            await abort_for(context, exc)

    return cast(F, wrapper)
