"""The request core under :class:`~synapse_ray.backend.BackendClient`.

One logical call = attempts + the shared :class:`~.retrying.Backoff`. Each
attempt has the spec's timeouts, a body read bounded by the call's deadline,
and its failure mapped to a typed :class:`BackendError` whose cause is
detached from the request (so the token never rides along in an error).
Auth headers go only to the backend's own origin.
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from .errors import BackendConnectionError, BackendError, BackendTimeoutError, BackendValidationError
from .policy import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    detach_request,
    error_from_response,
    parse_retry_after,
    scrub,
)
from .retrying import Backoff
from .spec import BackendSpec, url_origin

__all__ = ["HttpCore", "is_local_host"]

log = structlog.get_logger("synapse_ray.backend")


def is_local_host(host: str) -> bool:
    """True for every spelling of this machine: ``localhost``, all of 127/8 (``127.1``
    too), ``::1``, and the unspecified ``0.0.0.0``/``::`` (which connect locally)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # inet_aton reads the short forms (127.1) that OS resolvers accept
            address = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return False
    return address.is_loopback or address.is_unspecified


def _json_bytes(value: Any, method: str, url: str) -> bytes:
    """Encode a JSON body ourselves: NaN and Infinity are not JSON and the API refuses them."""
    try:
        return jsonlib.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise BackendValidationError(
            f"The body of {method} {url} contains NaN or Infinity, which JSON (and the "
            f"backend) does not accept: {exc}. Replace them (say, with null) before sending.",
            method=method,
        ) from None


class _BodyTooSlow(Exception):
    """A response body still arriving at the call's deadline (a slow drip)."""


def _read_within(response: httpx.Response, deadline: float | None) -> httpx.Response:
    """Read the whole body, giving up at ``deadline``: ``read_timeout`` bounds one read,
    this bounds them all, so a server dripping a byte at a time cannot hold a call forever."""
    if response.is_stream_consumed:  # already in memory (an in-process transport)
        return response
    parts: list[bytes] = []
    try:
        for chunk in response.iter_raw():
            parts.append(chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise _BodyTooSlow
    finally:
        response.close()
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=b"".join(parts),
        request=response.request,
        extensions=response.extensions,
    )


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: the error to raise if no retry is left."""

    error: BackendError
    cause: BaseException | None
    always_retryable: bool = False  # retry even a non-idempotent request
    delay: float | None = None  # server-requested wait (Retry-After)


class HttpCore:
    """Retrying, typed HTTP to one backend (the base of ``BackendClient``)."""

    def __init__(self, spec: BackendSpec, transport: httpx.BaseTransport | None = None) -> None:
        self.spec = spec
        self._custom_transport = transport is not None
        self._origin = spec.origin()
        self._secret = spec.token.get_secret_value() if spec.token is not None else None
        host = self._origin[1]
        self._http = httpx.Client(
            base_url=spec.base_url,
            timeout=spec.timeout(),
            transport=transport,
            follow_redirects=False,
            # Local traffic must never be sent through a proxy from the env (with the token).
            trust_env=not is_local_host(host),
        )

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    # -- the request core ----------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """``value`` with the token masked wherever it appears (for errors built outside)."""
        return scrub(value, self._secret)

    def is_same_origin(self, url: str | httpx.URL) -> bool:
        return url_origin(str(url)) == self._origin

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        resource: str | None = None,
        retries: int | None = None,
        allow_status: Iterable[int] = (),
    ) -> httpx.Response:
        """Send one logical request (with retries) and return the read response.

        ``url`` is relative to ``base_url`` or absolute. Statuses in
        ``allow_status`` are returned instead of raised.
        """
        response = self._send(
            method,
            url,
            params=params,
            json=json,
            content=content,
            headers=headers,
            resource=resource,
            retries=retries,
            allow_status=frozenset(allow_status),
            stream=False,
        )
        return response

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        resource: str | None = None,
    ) -> Iterator[httpx.Response]:
        """Like :meth:`request` but the body is left unread for streaming."""
        response = self.send_stream(method, url, headers=headers, resource=resource)
        try:
            yield response
        finally:
            response.close()

    def send_stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        resource: str | None = None,
        allow_status: Iterable[int] = (),
    ) -> httpx.Response:
        """:meth:`stream` without the context manager: the caller closes the response."""
        return self._send(
            method,
            url,
            headers=headers,
            resource=resource,
            stream=True,
            allow_status=frozenset(allow_status),
        )

    def detach(self, exc: BaseException) -> BaseException:
        """An httpx error fit to chain: without its request (and so without the token)."""
        return detach_request(exc, self._secret)

    def _send(
        self,
        method: str,
        url: str,
        *,
        stream: bool,
        allow_status: frozenset[int],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        resource: str | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        method = method.upper()
        extra = dict(headers or {})
        if json is not None:
            content = _json_bytes(json, method, url)
            extra.setdefault("Content-Type", "application/json")
        keyed = any(key.lower() == IDEMPOTENCY_HEADER.lower() for key in extra)
        if method == "POST" and not keyed:
            # One key per logical call, reused by its retries: the server dedupes.
            extra[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
            keyed = True
        idempotent = method in IDEMPOTENT_METHODS or keyed
        budget = self.spec.max_retries if retries is None else retries
        if content is not None and not isinstance(content, bytes):
            budget = 0  # a consumed iterator cannot be replayed; callers resume instead
        backoff = Backoff(
            self.spec.backoff, budget, what=f"{method} {url}", deadline_s=self.spec.total_timeout
        )
        while True:
            request = self._http.build_request(method, url, params=params, content=content, headers=extra)
            if self.is_same_origin(request.url):
                request.headers.update(self.spec.headers())
            outcome = self._attempt(request, stream, allow_status, resource, backoff)
            if isinstance(outcome, httpx.Response):
                return outcome
            if not (outcome.always_retryable or idempotent):
                raise outcome.error from outcome.cause
            backoff.retry(
                outcome.error, outcome.cause, delay=outcome.delay, method=method, path=request.url.path
            )

    def _attempt(
        self,
        request: httpx.Request,
        stream: bool,
        allow_status: frozenset[int],
        resource: str | None,
        backoff: Backoff,
    ) -> httpx.Response | _Failure:
        """Send once: the response if it is a success, else what went wrong.

        Raises right away for errors no retry can fix (4xx other than 429, and
        redirects, which this API never answers with except for downloads).
        """
        method, url = request.method, request.url
        started = time.monotonic()
        attempt = backoff.failures
        try:
            response = self._http.send(request, stream=True)
            if not stream:
                response = _read_within(response, backoff.deadline)
        except _BodyTooSlow:
            self._log_request(method, url, started, attempt, error="BodyTooSlow")
            error = BackendTimeoutError(
                f"Timed out on {method} {url}: the answer's body was still arriving after "
                f"total_timeout={self.spec.total_timeout}s",
                url=str(url),
                method=method,
            )
            return _Failure(error, None)
        except httpx.TimeoutException as exc:
            self._log_request(method, url, started, attempt, error=type(exc).__name__)
            error = BackendTimeoutError(
                f"Timed out ({type(exc).__name__}) on {method} {url} after "
                f"{time.monotonic() - started:.1f}s (connect_timeout="
                f"{self.spec.connect_timeout}s, read_timeout={self.spec.read_timeout}s)",
                url=str(url),
                method=method,
            )
            # Nothing reached the server if the connection never opened.
            cause = detach_request(exc, self._secret)
            return _Failure(error, cause, always_retryable=isinstance(exc, httpx.ConnectTimeout))
        except httpx.TransportError as exc:
            self._log_request(method, url, started, attempt, error=type(exc).__name__)
            error = self._connection_error(method, url, exc)
            cause = detach_request(exc, self._secret)
            return _Failure(error, cause, always_retryable=isinstance(exc, httpx.ConnectError))
        status = response.status_code
        self._log_request(method, url, started, attempt, status=status)
        if status < 300 or status in allow_status:
            return response
        if stream:
            response.read()
            response.close()
        if 300 <= status < 400:
            raise BackendError(
                f"Unexpected redirect ({status}) for {method} {url} to "
                f"{response.headers.get('Location', '(no Location)')!r}; the backend API does not "
                f"redirect, check SYNAPSE_HOST (scheme, host, trailing path).",
                status=status,
                url=str(url),
                method=method,
            )
        failure = error_from_response(response, resource=resource, secret=self._secret)
        if status == 429:  # not processed: safe to repeat for any method
            delay = parse_retry_after(response.headers.get("Retry-After"))
            return _Failure(failure, None, always_retryable=True, delay=delay)
        if status in RETRYABLE_STATUSES:
            return _Failure(failure, None)
        raise failure

    def _connection_error(
        self, method: str, url: httpx.URL, exc: httpx.TransportError
    ) -> BackendConnectionError:
        reason = scrub(str(exc), self._secret)
        return BackendConnectionError(
            f"Cannot reach the backend at {url} ({method}): {type(exc).__name__}: {reason}. "
            f"Is it running? Start a local one with `synapse-ray backend serve` "
            f"(then export SYNAPSE_HOST), or check SYNAPSE_HOST.",
            url=str(url),
            method=method,
        )

    def _log_request(
        self,
        method: str,
        url: httpx.URL,
        started: float,
        attempt: int,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        """One debug line per attempt: answered (``status``) or failed (``error``)."""
        fields: dict[str, Any] = {"status": status}
        if error is not None:
            fields["error"] = error
        log.debug(
            "backend.request",
            method=method,
            path=url.path,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            attempt=attempt,
            **fields,
        )
