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
import contextlib
import ipaddress
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from synapse_ray.backend.spec import BackendSpec

from . import datasets, files, jobs, logs, models, uploads
from .common import DB_POOL, SETTINGS, STORE, UPLOADS, Limits, Settings, UploadState
from .datadir import default_data_dir, load_or_create_token
from .faults import Faults
from .middleware import auth_middleware, error_middleware, idempotency_middleware
from .store import Store

__all__ = ["LocalBackendServer", "start_embedded"]

log = structlog.get_logger("synapse_ray.backend.server")

_GRACE_S = 0.5  # how long stop() lets in-flight requests finish


class LocalBackendServer:
    """A local backend on ``host:port`` (``port=0`` picks a free port).

    ``token`` defaults to the one stored in ``<data_dir>/token`` (created on
    first start with mode 0600). ``public_url`` is the origin put in every URL
    the server returns (file and upload URLs); by default the listening
    address (127.0.0.1 when listening on all interfaces), never the request's
    ``Host`` header. ``limits`` bounds what one request may ask (see
    :class:`~.common.Limits`). Leftovers are pruned at start and every
    ``prune_interval`` seconds. ``test_mode=True`` enables fault injection
    (``self.faults`` and ``POST _test/faults``); it is off otherwise.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        public_url: str | None = None,
        limits: Limits | None = None,
        prune_interval: float = 3600.0,
        test_mode: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.host = host
        self._requested_port = port
        self._token = token
        self.public_url = _check_public_url(public_url) if public_url else None
        self.limits = limits or Limits()
        self.prune_interval = prune_interval
        self._pool: ThreadPoolExecutor | None = None
        self._pruner: asyncio.Task[None] | None = None
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
        """A URL clients on this machine can use (``0.0.0.0`` is not one: 127.0.0.1 is)."""
        if not self.port:
            raise RuntimeError("The local backend is not started.")
        host = _connectable(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def origin(self) -> str:
        """The origin of every URL this server returns (``public_url`` or :attr:`url`)."""
        return (self.public_url or self.url).rstrip("/")

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
        middlewares = [error_middleware(), auth_middleware(self.token)]
        if self.test_mode:
            from .faults import fault_middleware

            middlewares.insert(0, fault_middleware(self.faults))
        middlewares.append(idempotency_middleware())
        app = web.Application(middlewares=middlewares, client_max_size=self.limits.max_json_bytes)
        app[STORE] = store
        app[UPLOADS] = UploadState()
        app[SETTINGS] = Settings(limits=self.limits)  # the origin is set once the port is known
        assert self._pool is not None
        app[DB_POOL] = self._pool
        for module in (datasets, uploads, models, jobs, logs, files):
            app.add_routes(module.routes)
        if self.test_mode:
            from .faults import fault_routes

            app.add_routes(fault_routes(self.faults))
        return app

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localbackend-db")
        self._store = await loop.run_in_executor(self._pool, Store, self.data_dir)
        _ = self.token  # create <data_dir>/token before the first request
        app = self.build_app()
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=_GRACE_S, keepalive_timeout=self.limits.idle_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, shutdown_timeout=_GRACE_S)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._close_store()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        app[SETTINGS].origin = self.origin
        self._pruner = asyncio.ensure_future(self._prune_forever())
        log.info("backend.server.listening", url=self.url, data_dir=str(self.data_dir))

    async def _prune_forever(self) -> None:
        """Prune leftovers (old keys, abandoned uploads, orphan files) while serving."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                await loop.run_in_executor(self._pool, self.store.prune)
            except Exception as exc:  # noqa: BLE001 - a failed prune must not stop the server
                log.warning("backend.server.prune_failed", error=type(exc).__name__)

    async def _close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._close_store()

    async def _close_store(self) -> None:
        if self._store is not None and self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._store.close)
        self._store = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel handlers still running after the grace period (e.g. injected stalls)."""
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


def _connectable(host: str) -> str:
    """The address to connect to for a listening ``host``: an unspecified one means loopback."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def is_loopback_host(host: str) -> bool:
    """True when listening on ``host`` exposes nothing beyond this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"public_url must be an origin such as 'http://host:8765', got {url!r}")
    return url.rstrip("/")


def start_embedded(data_dir: Path | None = None, *, test_mode: bool = False) -> LocalBackendServer:
    """Start a local backend on a free loopback port (what ``synapse-ray run`` uses)."""
    return LocalBackendServer(data_dir=data_dir, port=0, test_mode=test_mode).start()
