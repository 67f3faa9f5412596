"""The embedded local backend: a real HTTP server speaking the backend API.

aiohttp on 127.0.0.1, SQLite records and a files directory (see
:mod:`.store`). It lets every code path that talks to Synapse run on a fresh
machine with no server to install, and it is what the test suite talks to.

``LocalBackendServer.start()`` runs it in a daemon thread with its own event
loop (for tests and ``synapse-ray run``); ``serve_forever()`` runs it in the
foreground (for ``synapse-ray backend serve``).
"""

from __future__ import annotations

import asyncio
import hmac
import signal
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from .policy import IDEMPOTENCY_HEADER
from .server_faults import Faults, fault_middleware, fault_routes
from .server_routes import BackendState, api_routes
from .spec import TOKEN_HEADER, BackendSpec
from .store import Store, default_data_dir, load_or_create_token

__all__ = ["LocalBackendServer", "start_embedded"]

log = structlog.get_logger("synapse_ray.backend.server")

_GRACE_S = 0.5  # how long stop() lets in-flight requests finish

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def _error_middleware() -> Any:
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


def _auth_middleware(token: str) -> Any:
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


def _idempotency_middleware(store: Store) -> Any:
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


class LocalBackendServer:
    """A local backend on ``host:port`` (``port=0`` picks a free port).

    ``token`` defaults to the one stored in ``<data_dir>/token`` (created on
    first start with mode 0600). ``test_mode=True`` enables fault injection
    (``self.faults`` and ``POST _test/faults``); it is off otherwise.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        test_mode: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.host = host
        self._requested_port = port
        self._token = token
        self.test_mode = test_mode
        self.faults = Faults()
        self.port: int = 0
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- public surface ----------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("The local backend is not started.")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = load_or_create_token(self.data_dir)
        return self._token

    @property
    def spec(self) -> BackendSpec:
        """A spec (with the token) for clients of this server."""
        return BackendSpec(base_url=self.url, token=self.token)

    @property
    def store(self) -> Store:
        """The server's store (for tests and tools in the same process)."""
        if self._store is None:
            raise RuntimeError("The local backend is not started.")
        return self._store

    def start(self) -> LocalBackendServer:
        """Serve from a daemon thread; return once the socket is listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                _cancel_leftovers(loop)
                loop.close()

        self._thread = threading.Thread(target=run, name="synapse-local-backend", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and release the port and the database."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def serve_forever(self, ready: Callable[[LocalBackendServer], None] | None = None) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (the ``serve`` CLI)."""

        async def main() -> None:
            await self._open()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):
                    pass
            if ready is not None:
                ready(self)
            try:
                await stop.wait()
            finally:
                await self._close()

        asyncio.run(main())

    def __enter__(self) -> LocalBackendServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.port else "not started"
        return f"LocalBackendServer({where}, data_dir={str(self.data_dir)!r})"

    # -- internals -----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        store = self.store
        middlewares = [_error_middleware(), _auth_middleware(self.token)]
        if self.test_mode:
            middlewares.insert(0, fault_middleware(self.faults))
        middlewares.append(_idempotency_middleware(store))
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
        app.add_routes(api_routes(BackendState(store)))
        if self.test_mode:
            app.add_routes(fault_routes(self.faults))
        return app

    async def _open(self) -> None:
        self._store = Store(self.data_dir)
        _ = self.token  # create <data_dir>/token before the first request
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, shutdown_timeout=_GRACE_S)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._store.close()
            self._store = None
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("backend.server.listening", url=self.url, data_dir=str(self.data_dir))

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._store is not None:
            self._store.close()
            self._store = None


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel handlers still running after the grace period (e.g. injected stalls)."""
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


def start_embedded(data_dir: Path | None = None, *, test_mode: bool = False) -> LocalBackendServer:
    """Start a local backend on a free loopback port (what ``synapse-ray run`` uses)."""
    return LocalBackendServer(data_dir=data_dir, port=0, test_mode=test_mode).start()
