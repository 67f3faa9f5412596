"""``files/``: stored artifacts (dataset files, model files), with ``Range`` support."""

from __future__ import annotations

from pathlib import PurePosixPath

from aiohttp import web

from .common import FILE_PATH, STORE, detail

__all__ = ["routes"]

_BLOCK = 1024 * 1024
_MAX_NAME_BYTES = 255  # no stored name is longer; resolving one would fail with ENAMETOOLONG


async def get_file(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    raw = request.match_info["path"]
    if "\x00" in raw:
        return detail(400, "A file path cannot contain NUL.")
    relative = PurePosixPath(raw)
    if any(len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES for part in relative.parts):
        return detail(404, "File not found.")
    root = store.files_dir.resolve()
    target = (root / relative).resolve()
    if ".." in relative.parts or not target.is_relative_to(root) or not target.is_file():
        return detail(404, "File not found.")
    request[FILE_PATH] = target
    return web.FileResponse(target, chunk_size=_BLOCK)


# [\s\S] and not ".": a stored name may contain CR/LF (served percent-encoded).
routes = [web.get(r"/files/{path:[\s\S]+}", get_file)]
