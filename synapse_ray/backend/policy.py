"""HTTP policy shared by the client: what to retry, which error, what it may carry.

Kept apart from :mod:`.client` so the rules (status -> error type,
``Retry-After``, scrubbing secrets out of errors) read in one place and are
testable without a server. The backoff itself is in :mod:`.retrying`.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, TypeVar

import httpx

from .errors import (
    AuthenticationError,
    BackendError,
    BackendValidationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from .retrying import MAX_BACKOFF, backoff_delay
from .spec import ENV_TOKEN

__all__ = [
    "IDEMPOTENT_METHODS",
    "IDEMPOTENCY_HEADER",
    "MAX_BACKOFF",
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "detach_request",
    "error_from_response",
    "parse_retry_after",
    "response_json",
    "scrub",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RETRY_AFTER = 120.0

E = TypeVar("E", bound=BaseException)
T = TypeVar("T")


def scrub(value: T, secret: str | None) -> T:
    """``value`` with every occurrence of ``secret`` in its strings (keys too) masked."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")  # type: ignore[return-value]
    if isinstance(value, dict):
        return {scrub(k, secret): scrub(v, secret) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(item, secret) for item in value)  # type: ignore[return-value]
    return value


def detach_request(exc: E, secret: str | None = None) -> E:
    """A copy of an httpx error without its ``request`` (whose headers hold the token).

    The error we raise chains this copy instead of the original, so neither
    ``err.__cause__`` nor a pickle of ``err`` (Ray ships errors between
    processes) can reach the ``Synapse-Access-Token`` header. Same type, same
    message, same traceback.
    """
    if not isinstance(exc, httpx.RequestError):
        return exc
    try:
        clean = type(exc)(scrub(str(exc), secret))
    except TypeError:  # an httpx subclass with another signature: keep the type family
        clean = httpx.RequestError(scrub(str(exc), secret))  # type: ignore[assignment]
    clean.__cause__ = exc.__cause__
    clean.__suppress_context__ = True
    return clean.with_traceback(exc.__traceback__)


def response_json(response: httpx.Response, what: str | None = None) -> Any:
    """The JSON body of a success answer, or a :class:`BackendError` saying what came instead."""
    try:
        return response.json()
    except ValueError:
        request = response.request
        kind = response.headers.get("Content-Type") or "no Content-Type"
        raise BackendError(
            f"Expected a JSON answer to {request.method} {request.url}"
            f"{f' ({what})' if what else ''}, got status {response.status_code} with "
            f"{len(response.content)} bytes of {kind}.",
            status=response.status_code,
            url=str(request.url),
            method=request.method,
        ) from None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500] if response.text else None


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in body.items())
    if isinstance(body, list):
        return "; ".join(_flatten(item) for item in body)
    return str(body) if body else ""


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def error_from_response(
    response: httpx.Response, *, resource: str | None = None, secret: str | None = None
) -> BackendError:
    """Map a >= 400 response to the matching :class:`BackendError` subclass.

    ``secret`` (the token) is scrubbed from the server's text in case a
    misbehaving server echoes it back.
    """
    status = response.status_code
    method = response.request.method
    url = str(response.request.url)
    body = scrub(_body(response), secret)  # kept in .errors/.body: scrubbed too
    detail = scrub(_detail(body), secret)
    where = f"{method} {url}"
    fields: dict[str, Any] = {"status": status, "url": url, "method": method}
    suffix = f": {detail}" if detail else ""
    if status == 401:
        return AuthenticationError(
            f"Authentication failed ({status}) for {where}{suffix}. Check {ENV_TOKEN}; "
            f"for the local backend use {ENV_TOKEN}=$(synapse-ray backend token).",
            **fields,
        )
    if status == 403:
        return PermissionDeniedError(f"Permission denied ({status}) for {where}{suffix}", **fields)
    if status == 404:
        name = resource or url
        return NotFoundError(f"Not found: {name} ({where}){suffix}", resource=name, **fields)
    if status in (400, 422):
        errors = body if isinstance(body, (dict, list)) else {"detail": detail}
        return BackendValidationError(
            f"The backend rejected {where} ({status}){suffix}", errors=errors, **fields
        )
    if status == 409:
        return ConflictError(f"Conflict ({status}) for {where}{suffix}", body=body, **fields)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitError(
            f"Rate limited ({status}) for {where}{suffix}", retry_after=retry_after, **fields
        )
    if status >= 500:
        return ServerError(f"Backend server error ({status}) for {where}{suffix}", **fields)
    return BackendError(f"Unexpected response ({status}) for {where}{suffix}", **fields)
