"""What every handler module shares: the app keys and the small answer helpers.

Handlers live one module per resource and reach the shared state only through
these typed ``web.AppKey`` entries, so no handler closes over another's
variables and each module reads on its own.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from aiohttp import web

from .store import Store

__all__ = [
    "DB_POOL",
    "FILE_PATH",
    "SETTINGS",
    "STORE",
    "UPLOADS",
    "Limits",
    "Settings",
    "UploadState",
    "db",
    "detail",
    "file_url",
    "int_id",
    "json_body",
    "page_of",
]

T = TypeVar("T")

MAX_ID = 2**63 - 1  # SQLite INTEGER range: larger ids cannot exist
GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (see "Limits" in docs/backend.md)."""

    max_json_bytes: int = 16 * 1024 * 1024  # a JSON body costs ~4x its size while parsed
    max_chunk_bytes: int = 256 * 1024 * 1024  # the client sends 50 MiB chunks by default
    max_upload_bytes: int = 1024 * GiB
    max_open_uploads: int = 100  # per tenant, uploads not yet complete
    free_disk_margin: int = 256 * 1024 * 1024  # left free after a declared upload
    body_read_timeout: float = 60.0  # longest wait for the next bytes of a chunk body (all of a JSON body)
    idle_timeout: float = 15.0  # a connection with no complete request is closed after this
    page_size: int = 100
    max_page_size: int = 1000


@dataclass
class Settings:
    """Server-wide configuration handlers read (never taken from the request)."""

    origin: str = ""  # "http://127.0.0.1:8765": the base of every URL we return
    limits: Limits = field(default_factory=Limits)


@dataclass
class UploadState:
    """Running md5 states and per-upload locks, shared by the upload handlers."""

    hashers: dict[str, Any] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, upload_id: str) -> asyncio.Lock:
        return self.locks.setdefault(upload_id, asyncio.Lock())


STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
UPLOADS = web.AppKey("uploads", UploadState)
DB_POOL = web.AppKey("db_pool", ThreadPoolExecutor)
FILE_PATH = web.RequestKey("file_path", Path)  # lets fault injection cut a file answer


async def db(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one store call on the store's own thread, never on the event loop.

    SQLite blocks while another process holds the write lock (``add-dataset``
    does, briefly); on the loop that would freeze every request, even ones
    that never touch the database. One thread keeps the connection's calls in
    order.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[DB_POOL], functools.partial(fn, *args, **kwargs))


def detail(status: int, text: str, **extra: Any) -> web.Response:
    """An error answer shaped like the real API's: ``{"detail": ...}``."""
    return web.json_response({"detail": text, **extra}, status=status)


def http_error(cls: type[web.HTTPException], text: str) -> web.HTTPException:
    return cls(text=json.dumps({"detail": text}), content_type="application/json")


def int_id(request: web.Request, key: str = "id") -> int:
    """A numeric path id, or 404 (ids that cannot exist are simply not found)."""
    raw = request.match_info[key]
    if not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_ID:
        raise http_error(web.HTTPNotFound, "Not found.")
    return int(raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: web.Request) -> Any:
    """The request body as JSON, or 400 naming what is wrong with it.

    Strict like the real API: NaN and Infinity are refused, and so is nesting
    too deep to parse (which would otherwise be a RecursionError and a 500).
    """
    try:
        text = await asyncio.wait_for(request.text(), request.app[SETTINGS].limits.body_read_timeout)
    except TimeoutError:
        raise http_error(web.HTTPRequestTimeout, "The body did not arrive in time.") from None
    except UnicodeDecodeError:
        raise http_error(web.HTTPBadRequest, "The body must be UTF-8 JSON.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise http_error(web.HTTPBadRequest, "The JSON body is nested too deeply.") from None
    except ValueError as exc:
        raise http_error(web.HTTPBadRequest, f"The body must be JSON: {exc}.") from None


def origin(request: web.Request) -> str:
    """The configured origin: never the ``Host`` header, which a client controls."""
    return request.app[SETTINGS].origin


def file_url(request: web.Request, relative: str) -> str:
    """The absolute URL of a stored file; every segment percent-encoded (``#``, ``?``, ``%``)."""
    return f"{origin(request)}/files/{quote(relative, safe='/')}"


def paging(request: web.Request) -> tuple[int, int]:
    """``(offset, limit)`` from ``?page=`` (1-based) and ``?page_size=``, or 400."""
    limits = request.app[SETTINGS].limits
    try:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("page_size", str(limits.page_size)))
    except ValueError:
        raise http_error(web.HTTPBadRequest, "page and page_size must be integers.") from None
    if page < 1 or not 1 <= size <= limits.max_page_size or page > MAX_ID // size:
        raise http_error(
            web.HTTPBadRequest, f"page must be >= 1 and page_size between 1 and {limits.max_page_size}."
        )
    return (page - 1) * size, size


def page_of(request: web.Request, total: int, results: list[Any], offset: int, limit: int) -> web.Response:
    """A list answer shaped like the real API's: ``count``, ``next``, ``previous``, ``results``."""
    page = offset // limit + 1
    query = {k: v for k, v in request.query.items() if k not in ("page", "page_size")}

    def link(number: int) -> str:
        params = urlencode({**query, "page": number, "page_size": limit})
        return f"{origin(request)}{request.path}?{params}"

    return web.json_response(
        {
            "count": total,
            "next": link(page + 1) if offset + limit < total else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": results,
        }
    )
