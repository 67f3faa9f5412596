"""``data_collections/``: read-only views of datasets registered with ``add-dataset``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .common import STORE, db, detail, file_url, int_id, page_of, paging

__all__ = ["routes"]


def collection_json(request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "created": record["created"],
        "file_specifications": [
            {
                "name": f["name"],
                "url": file_url(request, f["path"]),
                "size": f["size"],
                "checksum": f["checksum"],
            }
            for f in record["files"]
        ],
    }


async def get_data_collection(request: web.Request) -> web.Response:
    store = request.app[STORE]
    record = await db(request, store.get_data_collection, int_id(request))
    if record is None:
        return detail(404, "Data collection not found.")
    return web.json_response(collection_json(request, record))


async def list_data_collections(request: web.Request) -> web.Response:
    store = request.app[STORE]
    offset, limit = paging(request)
    total, records = await db(request, store.list_data_collections, offset, limit)
    return page_of(request, total, [collection_json(request, r) for r in records], offset, limit)


routes = [
    web.get("/data_collections/", list_data_collections),
    web.get("/data_collections/{id}/", get_data_collection),
]
