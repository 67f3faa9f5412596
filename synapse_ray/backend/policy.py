"""HTTP policy shared by the client: what to retry, how long to wait, which error.

Kept apart from :mod:`.client` so the rules (status -> error type, backoff,
``Retry-After``) read in one place and are testable without a server.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any

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
from .spec import ENV_TOKEN

__all__ = [
    "IDEMPOTENT_METHODS",
    "IDEMPOTENCY_HEADER",
    "MAX_BACKOFF",
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "error_from_response",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 120.0


def backoff_delay(base: float, attempt: int) -> float:
    """Exponential backoff with +-20% jitter so workers don't retry in lockstep."""
    delay = min(MAX_BACKOFF, base * (2**attempt))
    return delay * random.uniform(0.8, 1.2)


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
    body = _body(response)
    detail = _detail(body)
    if secret:
        detail = detail.replace(secret, "***")
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
