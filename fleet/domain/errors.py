"""Errors the core raises; the edges translate them (gRPC status codes, CLI exit codes)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core reports to a caller."""


class InvalidArgument(DomainError):
    """Input that is wrong in itself: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(DomainError):
    """A referenced entity does not exist."""


class FailedPrecondition(DomainError):
    """The request is well-formed but the entity's state does not allow it."""


class PermissionDenied(DomainError):
    """The caller is known but their role does not allow the action (or they may not take this
    part in it, e.g. be their own second checker)."""
