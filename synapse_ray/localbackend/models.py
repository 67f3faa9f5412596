"""``models/``: a model is a record plus the file of one completed chunked upload."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from synapse_ray.backend.policy import IDEMPOTENCY_HEADER

from .common import STORE, db, detail, file_url, int_id, json_body, page_of, paging

__all__ = ["MODEL_FIELDS", "routes"]

MODEL_FIELDS = ("name", "plugin", "version", "checkpoint", "configuration", "description")
# Set by the server, never taken from a request; every other field a client sends
# (upstream sends category and more) is kept and returned as given.
MODEL_SERVER_FIELDS = (
    "id",
    "chunked_upload",
    "file",
    "file_name",
    "file_size",
    "checksum",
    "created",
    "file_path",
    "tenant",
)


def model_json(request: web.Request, model: dict[str, Any]) -> dict[str, Any]:
    out = {key: model.get(key) for key in ("id", *MODEL_FIELDS)}
    out.update({k: v for k, v in model.items() if k not in out and k not in ("file_path", "tenant")})
    out.update(
        file=file_url(request, model["file_path"]),
        file_name=model["file_name"],
        file_size=model["file_size"],
        checksum=model["checksum"],
        created=model["created"],
    )
    return out


async def create_model(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payload = await json_body(request)
    if not isinstance(payload, dict):
        return detail(400, "The body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["This field is required."]
    if payload.get("configuration") is not None and not isinstance(payload["configuration"], dict):
        errors["configuration"] = ["Must be a JSON object."]
    upload_id = payload.get("chunked_upload")
    if isinstance(upload_id, int) and not isinstance(upload_id, bool):
        upload_id = str(upload_id)
    if not upload_id or not isinstance(upload_id, str):
        errors["chunked_upload"] = ["This field is required (the id of a complete chunked upload)."]
    elif (upload := await db(request, store.get_upload, upload_id)) is None:
        errors["chunked_upload"] = [f"Chunked upload {upload_id!r} does not exist."]
    elif upload["status"] not in ("complete", "consumed"):
        errors["chunked_upload"] = [f"Chunked upload is {upload['status']}, not complete."]
    if errors:
        return web.json_response(errors, status=400)
    fields = {key: payload.get(key) for key in MODEL_FIELDS}
    fields.update({k: v for k, v in payload.items() if k not in fields and k not in MODEL_SERVER_FIELDS})
    tenant = request.headers.get("Synapse-Tenant")
    key = request.headers.get(IDEMPOTENCY_HEADER)
    # The upload's state is checked inside the store call: two requests racing
    # for one upload cannot both pass a check made before either writes.
    model = await db(request, store.create_model, fields, upload_id, tenant, key)
    if isinstance(model, str):
        return web.json_response({"chunked_upload": [model]}, status=400)
    return web.json_response(model_json(request, model), status=201)


async def get_model(request: web.Request) -> web.Response:
    store = request.app[STORE]
    model = await db(request, store.get_model, int_id(request))
    if model is None:
        return detail(404, "Model not found.")
    return web.json_response(model_json(request, model))


async def list_models(request: web.Request) -> web.Response:
    store = request.app[STORE]
    offset, limit = paging(request)
    filters = {k: v for k, v in request.query.items() if k not in ("page", "page_size")}
    total, models = await db(request, store.list_models, filters, offset, limit)
    return page_of(request, total, [model_json(request, m) for m in models], offset, limit)


routes = [
    web.post("/models/", create_model),
    web.get("/models/", list_models),
    web.get("/models/{id}/", get_model),
]
