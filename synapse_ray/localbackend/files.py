"""``files/``: stored artifacts (dataset files, model files), with ``Range`` support."""

from __future__ import annotations

from pathlib import PurePosixPath

from aiohttp import web

from .common import FILE_PATH, STORE, detail

__all__ = ["routes"]

_BLOCK = 1024 * 1024


async def get_file(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    relative = PurePosixPath(request.match_info["path"])
    root = store.files_dir.resolve()
    target = (root / relative).resolve()
    if ".." in relative.parts or not target.is_relative_to(root) or not target.is_file():
        return detail(404, "File not found.")
    request[FILE_PATH] = target
    return web.FileResponse(target, chunk_size=_BLOCK)


routes = [web.get("/files/{path:.+}", get_file)]
