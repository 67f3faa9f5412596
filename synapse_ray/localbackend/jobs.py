"""``jobs/``: run records; the aggregator writes progress and outcome through them."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .common import STORE, db, detail, int_id, json_body, page_of, paging

__all__ = ["JOB_STATUSES", "routes"]

JOB_STATUSES = ("pending", "running", "stopped", "cancelled", "succeeded", "failed")
_READ_ONLY_FIELDS = ("id", "created", "updated", "tenant")


def job_errors(payload: dict[str, Any]) -> dict[str, list[str]]:
    """Only the documented statuses; a given ``status`` (even ``null``) must be one of them."""
    if "status" in payload and payload["status"] not in JOB_STATUSES:
        shown = json.dumps(payload["status"])[:100]
        return {"status": [f"{shown} is not one of {', '.join(JOB_STATUSES)}."]}
    return {}


async def job_fields(request: web.Request) -> dict[str, Any] | web.Response:
    """The writable fields of a create or update body, or the 400 answer that refuses it."""
    payload = await json_body(request)
    if not isinstance(payload, dict):
        return detail(400, "The body must be a JSON object.")
    errors = job_errors(payload)
    if errors:
        return web.json_response(errors, status=400)
    return {k: v for k, v in payload.items() if k not in _READ_ONLY_FIELDS}


async def create_job(request: web.Request) -> web.Response:
    store = request.app[STORE]
    fields = await job_fields(request)
    if isinstance(fields, web.Response):
        return fields
    fields.setdefault("status", "pending")
    job = await db(request, store.create_job, fields, request.headers.get("Synapse-Tenant"))
    return web.json_response(job, status=201)


async def get_job(request: web.Request) -> web.Response:
    store = request.app[STORE]
    job = await db(request, store.get_job, int_id(request))
    if job is None:
        return detail(404, "Job not found.")
    return web.json_response(job)


async def list_jobs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    offset, limit = paging(request)
    total, jobs = await db(request, store.list_jobs, offset, limit)
    return page_of(request, total, jobs, offset, limit)


async def update_job(request: web.Request) -> web.Response:
    store = request.app[STORE]
    changes = await job_fields(request)
    if isinstance(changes, web.Response):
        return changes
    job = await db(request, store.update_job, int_id(request), changes)
    if job is None:
        return detail(404, "Job not found.")
    return web.json_response(job)


routes = [
    web.post("/jobs/", create_job),
    web.get("/jobs/", list_jobs),
    web.get("/jobs/{id}/", get_job),
    web.patch("/jobs/{id}/", update_job),
]
