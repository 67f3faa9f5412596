"""The local backend's middlewares: JSON errors, token auth, idempotency keys.

Order (outermost first): errors, auth, idempotency; in test mode the fault
injection middleware wraps them all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sqlite3
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from synapse_ray.backend.policy import IDEMPOTENCY_HEADER
from synapse_ray.backend.spec import TOKEN_HEADER

from .common import SETTINGS, STORE, db

__all__ = ["auth_middleware", "error_middleware", "idempotency_middleware"]

log = structlog.get_logger("synapse_ray.backend.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def error_middleware() -> Any:
    """Every error answer is JSON ``{"detail": ...}`` like the real API.

    A handler bug is logged with its type and stack frames only: an
    exception's text can quote request data (a header, say), and nothing a
    client sent may reach the server log.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                raise
            return _json_error(exc.status, exc.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                return _internal(request, exc)
            # Another process (add-dataset) held the write lock past the busy timeout.
            return _json_error(503, "The database is busy; retry shortly.", headers={"Retry-After": "1"})
        except Exception as exc:  # noqa: BLE001 - any handler bug becomes a JSON 500
            return _internal(request, exc)

    return middleware


def _internal(request: web.Request, exc: BaseException) -> web.Response:
    log.error(
        "backend.server.error",
        method=request.method,
        path=request.path,
        error=type(exc).__name__,
        traceback="".join(traceback.format_tb(exc.__traceback__)),
    )
    return _json_error(500, f"Internal server error: {type(exc).__name__}.")


def auth_middleware(token: str) -> Any:
    """Constant-time token check before anything else reads the request."""
    expected = f"Token {token}".encode()
    bare = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(TOKEN_HEADER)
        if not given:
            return _json_error(401, "Authentication credentials were not provided.")
        # Header bytes that are not UTF-8 arrive as surrogates: compare the bytes
        # as sent instead of failing to encode them (which used to be a 500).
        raw = given.strip().encode("utf-8", "surrogateescape")
        if not (hmac.compare_digest(raw, expected) or hmac.compare_digest(raw, bare)):
            return _json_error(401, "Invalid token.")
        return await handler(request)

    return middleware


async def _fingerprint(request: web.Request) -> str:
    """What a key is bound to: tenant, method, path, query, and the body (a POST)
    or the declared range (a PUT chunk, whose body is streamed, not buffered)."""
    digest = hashlib.sha256()
    for part in (
        request.headers.get("Synapse-Tenant", ""),
        request.method,
        request.path,
        request.query_string,
        request.headers.get("Content-Range", ""),
    ):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    if request.method == "POST":
        limit = request.app[SETTINGS].limits.body_read_timeout
        try:
            digest.update(await asyncio.wait_for(request.read(), limit))
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text='{"detail": "The body did not arrive in time."}', content_type="application/json"
            ) from None
    return digest.hexdigest()


def idempotency_middleware() -> Any:
    """Replay the stored answer for a repeated ``Idempotency-Key`` (POST, or PUT with a key).

    Only 2xx answers are stored and replayed: an error answer (say, a chunk
    body cut off by a dropped connection, or a 503) lets the client's retry of
    the same key run again. A key is bound to its request (tenant, path and
    body): the same key with a different request is refused with 422, never
    answered with another request's result.
    """
    locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key or request.method not in ("POST", "PUT"):
            return await handler(request)
        store = request.app[STORE]
        ident = (key, request.method, request.path)
        fingerprint = await _fingerprint(request)
        lock = locks.setdefault(ident, asyncio.Lock())
        try:
            async with lock:
                stored = await db(request, store.get_idempotent, *ident)
                if stored is not None:
                    if stored["fingerprint"] not in (None, fingerprint):
                        return _json_error(
                            422, f"This {IDEMPOTENCY_HEADER} was already used with a different request."
                        )
                    return web.Response(
                        status=stored["status"],
                        body=stored["body"],
                        content_type=stored["content_type"] or "application/json",
                        headers={"Idempotent-Replayed": "true"},
                    )
                response = await handler(request)
                if (
                    isinstance(response, web.Response)
                    and 200 <= response.status < 300
                    and isinstance(response.body, bytes)
                ):
                    await db(
                        request,
                        store.put_idempotent,
                        *ident,
                        response.status,
                        response.body,
                        response.content_type,
                        fingerprint,
                    )
        finally:
            if not lock.locked():
                locks.pop(ident, None)
        return response

    return middleware
