"""``BackendClient``: typed, retrying access to the Synapse REST API.

One ``httpx.Client`` (one connection pool) per process per spec, reached via
:func:`get_client`. The client is a live object and never crosses a process
boundary: pickling it yields its :class:`BackendSpec`-keyed twin in the target
process. The request core (retries, timeouts, auth on the own origin only) is
:class:`~.transport.HttpCore`; this module holds the API's resources.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import structlog

from .download import download_file
from .errors import (
    BackendError,
    LocalPathError,
)
from .policy import (
    response_json,
)
from .shapes import DataCollection, Job, Model
from .spec import BackendSpec
from .transport import HttpCore
from .upload import check_model_fields, chunked_upload, prepared_source

__all__ = ["BackendClient", "close_clients", "get_client"]

log = structlog.get_logger("synapse_ray.backend")


def _segment(value: int | str) -> str:
    """An id as one URL path segment (``/`` and ``..`` cannot change the route)."""
    return quote(str(value), safe="")


class BackendClient(HttpCore):
    """Synchronous client for datasets, models, jobs and logs.

    ``transport`` is passed to ``httpx.Client`` (``httpx.MockTransport`` in
    tests). Every request has the spec's timeouts; idempotent requests and
    keyed POSTs are retried on connect errors, timeouts, 502/503/504 and 429.
    """

    # -- lifecycle -----------------------------------------------------------------

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
        return cast(DataCollection, response_json(response))

    def download_data_collection(
        self, collection: DataCollection | Mapping[str, Any] | int | str, dest_dir: str | Path
    ) -> list[Path]:
        """Download every file of a collection into ``dest_dir``, md5-verified."""
        if isinstance(collection, (int, str)):
            collection = self.get_data_collection(collection)
        paths = []
        for spec in collection.get("file_specifications", []):
            paths.append(
                self.download(
                    spec["url"],
                    dest_dir,
                    name=spec["name"],
                    checksum=spec.get("checksum"),
                    size=spec.get("size"),
                )
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
        check_model_fields(fields)
        with prepared_source(Path(source)) as (path, filename):
            upload = chunked_upload(self, path, filename)
        fields["chunked_upload"] = upload["id"]
        response = self.request("POST", "models/", json=fields)
        return cast(Model, response_json(response))

    def get_model(self, model_id: int | str) -> Model:
        """``GET models/{id}/``."""
        response = self.request("GET", f"models/{_segment(model_id)}/", resource=f"model {model_id}")
        return cast(Model, response_json(response))

    def list_models(self, **filters: Any) -> list[Model]:
        """``GET models/`` (filters become query params), every page: follows ``next``."""
        return cast(list[Model], list(self.iter_pages("models/", params=filters or None)))

    def iter_pages(self, url: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The items of a paginated list endpoint (``{"results": [...], "next": url}``), page by page."""
        seen: set[str] = set()
        next_url: str | None = url
        while next_url:
            page = response_json(self.request("GET", next_url, params=params))
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise BackendError(f"Expected a page {{'results': [...]}} from GET {next_url}.", url=next_url)
            yield from page["results"]
            params = None  # ``next`` already carries the query
            next_url = page.get("next")
            if next_url in seen:
                raise BackendError(f"The backend's pages loop back to {next_url}.", url=next_url)
            if next_url:
                seen.add(next_url)

    def download_model(self, model_id: int | str, dest_dir: str | Path) -> Path:
        """Download a model's artifact into ``dest_dir``, md5-verified."""
        model = self.get_model(model_id)
        return self.download(
            model["file"],
            dest_dir,
            name=model.get("file_name"),
            checksum=model.get("checksum"),
            size=model.get("file_size"),
        )

    # -- files ---------------------------------------------------------------------

    def download(
        self,
        url: str,
        dest_dir: str | Path,
        name: str | None = None,
        checksum: str | None = None,
        size: int | None = None,
    ) -> Path:
        """Stream ``url`` to ``dest_dir/name`` via a temp file; verify md5 and size if known.

        Raises :class:`UnsafePathError` (before any request) when ``name``
        would escape ``dest_dir`` and :class:`ChecksumMismatchError` (leaving
        no file behind) when the content does not match ``checksum`` or runs
        past ``size``.
        """
        return download_file(self, url, Path(dest_dir), name=name, checksum=checksum, size=size)

    # -- jobs and logs -------------------------------------------------------------

    def create_job(self, data: Mapping[str, Any]) -> Job:
        """``POST jobs/``."""
        return cast(Job, response_json(self.request("POST", "jobs/", json=dict(data))))

    def get_job(self, job_id: int | str) -> Job:
        """``GET jobs/{id}/``."""
        response = self.request("GET", f"jobs/{_segment(job_id)}/", resource=f"job {job_id}")
        return cast(Job, response_json(response))

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
        return cast(Job, response_json(response))

    def create_logs(self, entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST logs/`` with a JSON list of entries."""
        payload = [dict(entry) for entry in entries]
        return cast(dict[str, Any], response_json(self.request("POST", "logs/", json=payload)))


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
