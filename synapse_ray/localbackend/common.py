"""What every handler module shares: the app keys and the small answer helpers.

Handlers live one module per resource and reach the shared state only through
these typed ``web.AppKey`` entries, so no handler closes over another's
variables and each module reads on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from .store import Store

__all__ = [
    "FILE_PATH",
    "SETTINGS",
    "STORE",
    "UPLOADS",
    "Settings",
    "UploadState",
    "db",
    "detail",
    "file_url",
    "int_id",
    "json_body",
]

T = TypeVar("T")

MAX_ID = 2**63 - 1  # SQLite INTEGER range: larger ids cannot exist


@dataclass
class Settings:
    """Server-wide configuration handlers read (never taken from the request)."""

    origin: str  # "http://127.0.0.1:8765": the base of every URL we return


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
FILE_PATH = web.RequestKey("file_path", Path)  # lets fault injection cut a file answer


async def db(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one store call for ``request``."""
    del request
    return fn(*args, **kwargs)


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def detail(status: int, text: str, **extra: Any) -> web.Response:
    """An error answer shaped like the real API's: ``{"detail": ...}``."""
    return web.json_response({"detail": text, **extra}, status=status)


def _http_error(cls: type[web.HTTPException], text: str) -> web.HTTPException:
    return cls(text=json.dumps({"detail": text}), content_type="application/json")


def int_id(request: web.Request, key: str = "id") -> int:
    """A numeric path id, or 404 (ids that cannot exist are simply not found)."""
    try:
        value = int(request.match_info[key])
    except ValueError:
        raise _http_error(web.HTTPNotFound, "Not found.") from None
    return value


async def json_body(request: web.Request) -> Any:
    """The request body as JSON, or 400 naming what is wrong with it."""
    try:
        return await request.json()
    except ValueError:
        raise _http_error(web.HTTPBadRequest, "The body must be JSON.") from None


def base_url(request: web.Request) -> str:
    return str(request.url.origin())


def file_url(request: web.Request, relative: str) -> str:
    """The absolute URL of a stored file (``relative`` to the files dir)."""
    return f"{base_url(request)}/files/{relative}"
