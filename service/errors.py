"""The errors the service raises, and the one table that turns them into HTTP statuses.

Each error's message is written for the person who made the request and says what to do; the
page shows it as it is and the REST API answers it as ``{"detail": ..., "field": ...}`` with the
status from :data:`HTTP_STATUS`. Anything else is a bug: a 500 and a traceback in the log.
"""
from __future__ import annotations

from core.errors import RequestError


class ValidationError(RequestError):
    """Input that cannot be accepted; ``field`` names it (None: the request as a whole)."""


class NotFoundError(LookupError):
    """No run / comparison / checkpoint / job with that id."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return self.args[0]


class ConflictError(RuntimeError):
    """The action does not fit the current state (e.g. deleting a running run)."""


class AuthError(PermissionError):
    """Cancelling needs the run's cancel token or the admin password; ``field`` names the token."""

    field = "cancel_token"


class UnauthorizedError(AuthError):
    """No cancel token (and not the admin)."""


class ForbiddenError(AuthError):
    """A cancel token that is not the run's."""


#: Error class -> HTTP status; a subclass not listed takes its nearest listed base's status.
HTTP_STATUS: dict[type[Exception], int] = {
    ValidationError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    UnauthorizedError: 401,
    ForbiddenError: 403,
    AuthError: 403,
}


def http_status(exc: BaseException) -> int:
    """The HTTP status of ``exc``: from :data:`HTTP_STATUS`, else 500 (not the person's fault)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc``'s message is meant for the person (a 4xx): show it, log no traceback."""
    return http_status(exc) < 500


def error_field(exc: BaseException) -> str | None:
    """The input an error is about, for a form to put the message next to (None: no one field)."""
    return getattr(exc, "field", None)
