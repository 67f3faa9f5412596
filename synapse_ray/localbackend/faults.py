"""Fault injection for the local backend (only when built with ``test_mode=True``).

Real HTTP failures on demand, so client retry/resume logic is tested against
the real server instead of mocks. A fault applies to the next ``count``
matching requests (after letting the first ``skip`` matches through):

- ``status``: answer ``status`` (default 503) with an optional ``Retry-After``;
  ``after=True`` runs the handler first (the change is committed, only the
  answer is lost: what idempotency keys are for).
- ``drop``: close the connection mid-response (after the handler ran, half
  the body sent); ``after=False`` closes it before the handler runs.
- ``stall``: sleep ``seconds`` before handling (to exceed a read timeout).
- ``drip``: run the handler, then send its answer one byte every ``seconds``
  (a slow-drip body: every read succeeds, the whole never arrives in time).

``status`` may carry its own ``body`` and ``content_type`` (a lying server:
say, a 200 with an HTML page).

Driven in-process via :class:`Faults` or over HTTP via ``POST _test/faults``.
``Faults.requests`` records ``(method, path)`` of every API request seen, so
tests can tell a resumed upload from a restarted one.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .common import FILE_PATH

__all__ = ["Fault", "Faults", "fault_middleware"]

KINDS = ("status", "drop", "stall", "drip")


@dataclass
class Fault:
    kind: str
    count: int = 1
    path_prefix: str = ""
    method: str | None = None
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    after: bool | None = None
    skip: int = 0
    body: str | None = None
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if self.count < 1 or self.skip < 0:
            raise ValueError("fault count must be >= 1 and skip >= 0")
        self.path_prefix = self.path_prefix.lstrip("/")
        if self.method:
            self.method = self.method.upper()
        if self.after is None:
            self.after = self.kind == "drop"

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return path.lstrip("/").startswith(self.path_prefix)


class Faults:
    """Thread-safe queue of pending faults (tests add from their own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []

    def add(self, kind: str, **options: Any) -> Fault:
        fault = Fault(kind=kind, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        """Record the request; consume one use of the first fault matching it."""
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None


def _injected(fault: Fault) -> web.Response:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.body is not None:
        return web.Response(
            status=fault.status, text=fault.body, content_type=fault.content_type, headers=headers
        )
    return web.json_response(
        {"detail": f"Injected fault: status {fault.status}."},
        status=fault.status,
        headers=headers,
    )


def _cut(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _cut_before(request: web.Request) -> web.StreamResponse:
    """Abort before any byte of the answer; the returned response is never sent."""
    _cut(request)
    response = web.StreamResponse(status=503)
    return response


async def _send_half_then_cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send the headers and about half the body, then abort the connection."""
    file_path: Path | None = request.get(FILE_PATH)
    if isinstance(response, web.Response) and response.body is not None:
        body = bytes(response.body) if isinstance(response.body, (bytes, bytearray)) else b""
    elif file_path is not None:
        size = file_path.stat().st_size
        with file_path.open("rb") as fh:
            body = fh.read(size // 2) + b"\0" * (size - size // 2)  # never fully sent
    else:
        body = b""
    cut = web.StreamResponse(status=response.status, headers=response.headers)
    cut.content_length = len(body)
    await cut.prepare(request)
    await cut.write(body[: len(body) // 2])
    # Give the half body a moment to leave the socket before aborting.
    await asyncio.sleep(0.05)
    _cut(request)
    return cut


async def _drip(request: web.Request, response: web.StreamResponse, seconds: float) -> web.StreamResponse:
    """Send the answer's body one byte at a time, ``seconds`` apart."""
    body = bytes(response.body) if isinstance(response, web.Response) and response.body else b""
    slow = web.StreamResponse(status=response.status, headers=response.headers)
    slow.content_length = len(body)
    await slow.prepare(request)
    for index in range(len(body)):
        await slow.write(body[index : index + 1])
        await asyncio.sleep(seconds)
    await slow.write_eof()
    return slow


def fault_middleware(faults: Faults) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_test/"):
            return await handler(request)
        fault = faults.take(request.method, request.path)
        if fault is None:
            return await handler(request)
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        if fault.kind == "drip":
            return await _drip(request, await handler(request), fault.seconds)
        if not fault.after:
            if fault.kind == "status":
                return _injected(fault)
            return await _cut_before(request)
        response = await handler(request)
        if fault.kind == "status":
            return _injected(fault)
        return await _send_half_then_cut(request, response)

    return middleware


def fault_routes(faults: Faults) -> list[web.RouteDef]:
    """``/_test/faults``: GET lists, POST adds (object or list), DELETE clears."""

    async def add(request: web.Request) -> web.Response:
        payload = await request.json()
        items = payload if isinstance(payload, list) else [payload]
        try:
            added = [faults.add(**item) for item in items]
        except (TypeError, ValueError) as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response({"faults": [asdict(f) for f in added]}, status=201)

    async def show(request: web.Request) -> web.Response:
        return web.json_response({"faults": faults.pending()})

    async def clear(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response({"faults": []})

    return [
        web.post("/_test/faults", add),
        web.get("/_test/faults", show),
        web.delete("/_test/faults", clear),
    ]
