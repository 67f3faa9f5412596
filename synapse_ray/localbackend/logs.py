"""``logs/``: log entries of runs, appended in batches and listed per job."""

from __future__ import annotations

from aiohttp import web

from .common import STORE, db, detail, json_body, page_of, paging

__all__ = ["routes"]


async def create_logs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payload = await json_body(request)
    if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
        return detail(400, "The body must be a JSON list of objects.")
    count = await db(request, store.add_logs, payload)
    return web.json_response({"count": count}, status=201)


async def list_logs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    offset, limit = paging(request)
    total, entries = await db(request, store.list_logs, request.query.get("job"), offset, limit)
    return page_of(request, total, entries, offset, limit)


routes = [
    web.post("/logs/", create_logs),
    web.get("/logs/", list_logs),
]
