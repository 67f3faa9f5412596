"""Errors raised by the backend client and the local backend.

One hierarchy under :class:`BackendError` so callers can catch the whole family
or a single HTTP outcome. Every class takes only ``message`` plus optional
keyword fields (inherited from :class:`~synapse_ray.errors.SynapseRayError`),
which keeps them picklable across Ray process boundaries. Messages are built
from the status, method, URL and the server's ``detail``; the access token is
never part of them.
"""

from __future__ import annotations

from synapse_ray.errors import SynapseRayError

__all__ = [
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "BackendValidationError",
    "ChecksumMismatchError",
    "ConflictError",
    "LocalPathError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "UnsafePathError",
]


class BackendError(SynapseRayError):
    """Any failure talking to the backend; ``status``/``url`` set when known."""

    status: int | None = None
    url: str | None = None
    method: str | None = None


class AuthenticationError(BackendError):
    """401: the token is missing or wrong (see ``SYNAPSE_ACCESS_TOKEN``)."""


class PermissionDeniedError(BackendError):
    """403: the token is valid but not allowed to do this."""


class NotFoundError(BackendError):
    """404: the named resource does not exist."""


class BackendValidationError(BackendError, ValueError):
    """400/422: the server rejected the input; ``errors`` holds field messages."""

    errors: dict[str, object] | list[object] | None = None


class ConflictError(BackendError):
    """409: the request conflicts with the server's state (e.g. upload offset)."""


class RateLimitError(BackendError):
    """429 after the retry budget; ``retry_after`` is the server's hint in seconds."""

    retry_after: float | None = None


class ServerError(BackendError):
    """5xx after the retry budget."""


class BackendTimeoutError(BackendError):
    """Connecting or reading took longer than the spec's timeouts allow."""


class BackendConnectionError(BackendError):
    """The backend could not be reached (refused, reset, DNS)."""


class ChecksumMismatchError(BackendError):
    """A downloaded or uploaded file's md5 differs from the expected one."""

    expected: str | None = None
    actual: str | None = None


class UnsafePathError(BackendError, ValueError):
    """A file name would land outside the destination directory."""


class LocalPathError(BackendError, ValueError):
    """A local path to upload or register is missing or empty."""
