"""``BackendClient``: typed, retrying access to the Synapse REST API.

One ``httpx.Client`` (one connection pool) per process per spec, reached via
:func:`get_client`. The client is a live object and never crosses a process
boundary: pickling it yields its :class:`BackendSpec`-keyed twin in the target
process. Auth headers are added only to URLs on the backend's own origin, so
download URLs pointing elsewhere (object stores) never see the token.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import structlog

from .download import download_file
from .errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BackendValidationError,
    LocalPathError,
)
from .policy import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    backoff_delay,
    error_from_response,
    parse_retry_after,
)
from .shapes import DataCollection, Job, Model
from .spec import BackendSpec, url_origin
from .upload import chunked_upload, prepared_source

__all__ = ["BackendClient", "close_clients", "get_client"]

log = structlog.get_logger("synapse_ray.backend")

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_MODEL_REQUIRED = ("name",)


def _segment(value: int | str) -> str:
    """An id as one URL path segment (``/`` and ``..`` cannot change the route)."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: the error to raise if no retry is left."""

    error: BackendError
    cause: BaseException | None
    always_retryable: bool = False  # retry even a non-idempotent request
    delay: float | None = None  # server-requested wait (Retry-After)


class BackendClient:
    """Synchronous client for datasets, models, jobs and logs.

    ``transport`` is passed to ``httpx.Client`` (``httpx.MockTransport`` in
    tests). Every request has the spec's timeouts; idempotent requests and
    keyed POSTs are retried on connect errors, timeouts, 502/503/504 and 429.
    """

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
            # Loopback traffic must never be sent through a proxy from the env.
            trust_env=host not in _LOOPBACK,
        )

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BackendClient(base_url={self.spec.base_url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._custom_transport:
            raise TypeError(
                "A BackendClient with a custom transport cannot be pickled; "
                "ship its BackendSpec (client.spec) and call get_client(spec) on the far side."
            )
        return (get_client, (self.spec,))

    # -- data collections ----------------------------------------------------------

    def get_data_collection(self, collection_id: int | str) -> DataCollection:
        """``GET data_collections/{id}/?expand=file_specifications``."""
        response = self.request(
            "GET",
            f"data_collections/{_segment(collection_id)}/",
            params={"expand": "file_specifications"},
            resource=f"data collection {collection_id}",
        )
        return cast(DataCollection, response.json())

    def download_data_collection(
        self, collection: DataCollection | Mapping[str, Any] | int | str, dest_dir: str | Path
    ) -> list[Path]:
        """Download every file of a collection into ``dest_dir``, md5-verified."""
        if isinstance(collection, (int, str)):
            collection = self.get_data_collection(collection)
        paths = []
        for spec in collection.get("file_specifications", []):
            paths.append(
                self.download(spec["url"], dest_dir, name=spec["name"], checksum=spec.get("checksum"))
            )
        return paths

    # -- models --------------------------------------------------------------------

    def create_model(self, data: Mapping[str, Any], file: str | Path | None = None) -> Model:
        """Upload ``file`` (a file, or a directory which is zipped) and create a model.

        Accepts both ``create_model(fields, file=path)`` and the older
        ``create_model({"file": path, **fields})``. The local path and the
        required fields are validated before anything is written server-side.
        """
        fields = dict(data)
        legacy_file = fields.pop("file", None)
        source = file if file is not None else legacy_file
        if source is None:
            raise LocalPathError("create_model needs a file: pass file=PATH (or data['file']).")
        missing = [key for key in _MODEL_REQUIRED if not fields.get(key)]
        if missing:
            raise BackendValidationError(
                f"create_model is missing required field(s): {', '.join(missing)}",
                errors={key: ["This field is required."] for key in missing},
            )
        with prepared_source(Path(source)) as (path, filename):
            upload = chunked_upload(self, path, filename)
        fields["chunked_upload"] = upload["id"]
        response = self.request("POST", "models/", json=fields)
        return cast(Model, response.json())

    def get_model(self, model_id: int | str) -> Model:
        """``GET models/{id}/``."""
        response = self.request("GET", f"models/{_segment(model_id)}/", resource=f"model {model_id}")
        return cast(Model, response.json())

    def list_models(self, **filters: Any) -> list[Model]:
        """``GET models/`` (``results`` of the page); filters become query params."""
        response = self.request("GET", "models/", params=filters or None)
        return cast(list[Model], response.json()["results"])

    def download_model(self, model_id: int | str, dest_dir: str | Path) -> Path:
        """Download a model's artifact into ``dest_dir``, md5-verified."""
        model = self.get_model(model_id)
        return self.download(
            model["file"], dest_dir, name=model.get("file_name"), checksum=model.get("checksum")
        )

    # -- files ---------------------------------------------------------------------

    def download(
        self,
        url: str,
        dest_dir: str | Path,
        name: str | None = None,
        checksum: str | None = None,
    ) -> Path:
        """Stream ``url`` to ``dest_dir/name`` via a temp file; verify md5 if known.

        Raises :class:`UnsafePathError` (before any request) when ``name``
        would escape ``dest_dir`` and :class:`ChecksumMismatchError` (leaving
        no file behind) when the content does not match ``checksum``.
        """
        return download_file(self, url, Path(dest_dir), name=name, checksum=checksum)

    # -- jobs and logs -------------------------------------------------------------

    def create_job(self, data: Mapping[str, Any]) -> Job:
        """``POST jobs/``."""
        return cast(Job, self.request("POST", "jobs/", json=dict(data)).json())

    def get_job(self, job_id: int | str) -> Job:
        """``GET jobs/{id}/``."""
        return cast(Job, self.request("GET", f"jobs/{_segment(job_id)}/", resource=f"job {job_id}").json())

    def update_job(
        self,
        job_id: int | str,
        *,
        status: str | None = None,
        progress_record: Any = None,
        metrics_record: Any = None,
        result: Any = None,
    ) -> Job:
        """``PATCH jobs/{id}/`` with only the fields that are given (not ``None``)."""
        given = {
            "status": status,
            "progress_record": progress_record,
            "metrics_record": metrics_record,
            "result": result,
        }
        payload = {key: value for key, value in given.items() if value is not None}
        response = self.request("PATCH", f"jobs/{_segment(job_id)}/", json=payload, resource=f"job {job_id}")
        return cast(Job, response.json())

    def create_logs(self, entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST logs/`` with a JSON list of entries."""
        payload = [dict(entry) for entry in entries]
        return cast(dict[str, Any], self.request("POST", "logs/", json=payload).json())

    # -- the request core ----------------------------------------------------------

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
        response = self._send(
            method,
            url,
            headers=headers,
            resource=resource,
            stream=True,
            allow_status=frozenset(),
        )
        try:
            yield response
        finally:
            response.close()

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
        keyed = any(key.lower() == IDEMPOTENCY_HEADER.lower() for key in extra)
        if method == "POST" and not keyed:
            # One key per logical call, reused by its retries: the server dedupes.
            extra[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
            keyed = True
        idempotent = method in IDEMPOTENT_METHODS or keyed
        budget = self.spec.max_retries if retries is None else retries
        if content is not None and not isinstance(content, bytes):
            budget = 0  # a consumed iterator cannot be replayed; callers resume instead
        attempt = 0
        while True:
            request = self._http.build_request(
                method, url, params=params, json=json, content=content, headers=extra
            )
            if self.is_same_origin(request.url):
                request.headers.update(self.spec.headers())
            outcome = self._attempt(request, stream, allow_status, resource, attempt)
            if isinstance(outcome, httpx.Response):
                return outcome
            retryable = outcome.always_retryable or idempotent
            if not retryable or attempt >= budget:
                if outcome.cause is None:
                    raise outcome.error
                raise outcome.error from outcome.cause
            delay = outcome.delay
            if delay is None:
                delay = backoff_delay(self.spec.backoff, attempt)
            log.warning(
                "backend.retry",
                method=method,
                path=request.url.path,
                attempt=attempt + 1,
                of=budget,
                delay_s=round(delay, 3),
                reason=type(outcome.error).__name__,
            )
            time.sleep(delay)
            attempt += 1

    def _attempt(
        self,
        request: httpx.Request,
        stream: bool,
        allow_status: frozenset[int],
        resource: str | None,
        attempt: int,
    ) -> httpx.Response | _Failure:
        """Send once: the response if it is a success, else what went wrong.

        Raises right away for errors no retry can fix (4xx other than 429).
        """
        method, url = request.method, request.url
        started = time.monotonic()
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            self._log_failure(method, url, started, attempt, type(exc).__name__)
            error = BackendTimeoutError(
                f"Timed out ({type(exc).__name__}) on {method} {url} after "
                f"{time.monotonic() - started:.1f}s (connect_timeout="
                f"{self.spec.connect_timeout}s, read_timeout={self.spec.read_timeout}s)",
                url=str(url),
                method=method,
            )
            # Nothing reached the server if the connection never opened.
            return _Failure(error, exc, always_retryable=isinstance(exc, httpx.ConnectTimeout))
        except httpx.TransportError as exc:
            self._log_failure(method, url, started, attempt, type(exc).__name__)
            error = self._connection_error(method, url, exc)
            return _Failure(error, exc, always_retryable=isinstance(exc, httpx.ConnectError))
        status = response.status_code
        self._log_response(method, url, status, started, attempt)
        if status < 400 or status in allow_status:
            return response
        if stream:
            response.read()
            response.close()
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
        return BackendConnectionError(
            f"Cannot reach the backend at {url} ({method}): {type(exc).__name__}: {exc}. "
            f"Is it running? Start a local one with `synapse-ray backend serve` "
            f"(then export SYNAPSE_HOST), or check SYNAPSE_HOST.",
            url=str(url),
            method=method,
        )

    def _log_response(self, method: str, url: httpx.URL, status: int, started: float, attempt: int) -> None:
        log.debug(
            "backend.request",
            method=method,
            path=url.path,
            status=status,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            attempt=attempt,
        )

    def _log_failure(self, method: str, url: httpx.URL, started: float, attempt: int, error: str) -> None:
        log.debug(
            "backend.request",
            method=method,
            path=url.path,
            status=None,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            attempt=attempt,
        )


# -- per-process cache ----------------------------------------------------------------

_clients: dict[BackendSpec, BackendClient] = {}
_clients_lock = threading.Lock()


def get_client(spec: BackendSpec) -> BackendClient:
    """The process-wide client for ``spec`` (one connection pool per process).

    Created lazily; after a fork the child starts with an empty cache (and a
    fresh lock) so it never shares the parent's sockets.
    """
    with _clients_lock:
        client = _clients.get(spec)
        if client is None:
            client = BackendClient(spec)
            _clients[spec] = client
        return client


def close_clients() -> None:
    """Close every cached client of this process (also run at exit)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _forget_after_fork() -> None:
    global _clients_lock
    _clients_lock = threading.Lock()
    _clients.clear()  # the parent's pools belong to the parent


atexit.register(close_clients)
os.register_at_fork(after_in_child=_forget_after_fork)
