"""The local backend's middlewares: JSON errors, token auth, idempotency keys.

Order (outermost first): errors, auth, idempotency; in test mode the fault
injection middleware wraps them all.
"""

from __future__ import annotations

import asyncio
import hmac
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from synapse_ray.backend.policy import IDEMPOTENCY_HEADER
from synapse_ray.backend.spec import TOKEN_HEADER

from .store import Store

__all__ = ["auth_middleware", "error_middleware", "idempotency_middleware"]

log = structlog.get_logger("synapse_ray.backend.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def error_middleware() -> Any:
    """Every error answer is JSON ``{"detail": ...}`` like the real API."""

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
        except Exception as exc:  # noqa: BLE001 - any handler bug becomes a JSON 500
            log.error(
                "backend.server.error",
                method=request.method,
                path=request.path,
                error=repr(exc),
                traceback=traceback.format_exc(),
            )
            return _json_error(500, f"Internal server error: {type(exc).__name__}.")

    return middleware


def auth_middleware(token: str) -> Any:
    expected = f"Token {token}".encode()
    bare = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(TOKEN_HEADER)
        if not given:
            return _json_error(401, "Authentication credentials were not provided.")
        raw = given.strip().encode()
        if not (hmac.compare_digest(raw, expected) or hmac.compare_digest(raw, bare)):
            return _json_error(401, "Invalid token.")
        return await handler(request)

    return middleware


def idempotency_middleware(store: Store) -> Any:
    """Replay the stored answer for a repeated ``Idempotency-Key`` (POST, or PUT with a key).

    Answers below 500 (except 429) are stored, so a client retrying after a
    lost answer gets the original result instead of a second record.
    """
    locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key or request.method not in ("POST", "PUT"):
            return await handler(request)
        ident = (key, request.method, request.path)
        lock = locks.setdefault(ident, asyncio.Lock())
        async with lock:
            stored = store.get_idempotent(*ident)
            if stored is not None:
                return web.Response(
                    status=stored["status"],
                    body=stored["body"],
                    content_type=stored["content_type"] or "application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            response = await handler(request)
            # Only successes are replayed: a 4xx (say, a chunk body cut off by a
            # dropped connection) must let the client's retry of the same key through.
            if (
                isinstance(response, web.Response)
                and 200 <= response.status < 300
                and isinstance(response.body, bytes)
            ):
                store.put_idempotent(*ident, response.status, response.body, response.content_type)
        locks.pop(ident, None)
        return response

    return middleware
