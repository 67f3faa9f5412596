"""Endpoint handlers of the local backend (the Synapse API subset we use).

Handlers keep the store access on the event loop thread (SQLite calls are
short) and push bulk file work (chunk writes, hashing, moves) to worker
threads so one large upload does not stall concurrent requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError

from .store import Store

__all__ = ["FILE_PATH", "JOB_STATUSES", "BackendState", "api_routes"]

JOB_STATUSES = ("pending", "running", "stopped", "cancelled", "succeeded", "failed")
_READ_ONLY_JOB_FIELDS = ("id", "created", "updated", "tenant")
_MODEL_FIELDS = ("name", "plugin", "version", "checkpoint", "configuration", "description")
# Set by the server, never taken from a request; every other field a client sends
# (upstream sends category and more) is kept and returned as given.
_MODEL_SERVER_FIELDS = (
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
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_WRITE_BLOCK = 1024 * 1024
FILE_PATH = web.RequestKey("file_path", Path)  # lets fault injection cut a file answer


class BackendState:
    """What handlers share: the store, running md5 states and per-upload locks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hashers: dict[str, Any] = {}
        self.upload_locks: dict[str, asyncio.Lock] = {}


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


def _file_url(request: web.Request, relative: str) -> str:
    return f"{_origin(request)}/files/{relative}"


def _detail(status: int, detail: str, **extra: Any) -> web.Response:
    return web.json_response({"detail": detail, **extra}, status=status)


def _int_id(request: web.Request, key: str = "id") -> int:
    try:
        return int(request.match_info[key])
    except ValueError:
        raise web.HTTPNotFound(text='{"detail": "Not found."}', content_type="application/json") from None


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"detail": "The body must be JSON."}', content_type="application/json"
        ) from None


# -- data collections ---------------------------------------------------------------


def _collection_json(request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "created": record["created"],
        "file_specifications": [
            {
                "name": f["name"],
                "url": _file_url(request, f["path"]),
                "size": f["size"],
                "checksum": f["checksum"],
            }
            for f in record["files"]
        ],
    }


def api_routes(state: BackendState) -> list[web.RouteDef]:
    store = state.store

    async def get_data_collection(request: web.Request) -> web.Response:
        record = store.get_data_collection(_int_id(request))
        if record is None:
            return _detail(404, "Data collection not found.")
        return web.json_response(_collection_json(request, record))

    async def list_data_collections(request: web.Request) -> web.Response:
        items = [_collection_json(request, r) for r in store.list_data_collections()]
        return web.json_response({"count": len(items), "results": items})

    # -- chunked uploads -------------------------------------------------------------

    def upload_json(request: web.Request, upload: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": upload["id"],
            "url": f"{_origin(request)}/chunked_upload/{upload['id']}/",
            "offset": upload["offset"],
            "size": upload["size"],
            "filename": upload["filename"],
            "status": upload["status"],
            **({"md5": upload["md5"]} if upload.get("md5") else {}),
        }

    async def put_chunk(request: web.Request) -> web.Response:
        match = _CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
        if match is None:
            return _detail(400, "Content-Range 'bytes start-end/total' is required.")
        start, end, total = (int(g) for g in match.groups())
        if end < start or end >= total:
            return _detail(400, f"Invalid Content-Range {match.group(0)!r}.")
        length = end - start + 1
        if request.content_length is not None and request.content_length != length:
            return _detail(400, "Content-Length does not match Content-Range.")
        upload_id = request.match_info.get("upload_id")
        if upload_id is None:
            if start != 0:
                return _detail(400, "A new chunked upload must start at byte 0.")
            filename = _safe_filename(request.query.get("filename", ""))
            if filename is None:
                return _detail(400, "The 'filename' query parameter is not a valid file name.")
            upload: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "filename": filename,
                "size": total,
                "offset": 0,
                "status": "uploading",
            }
            is_new = True
        else:
            found = store.get_upload(upload_id)
            if found is None:
                return _detail(404, "Chunked upload not found.")
            upload = found
            is_new = False
            if upload["status"] != "uploading":
                return _detail(400, f"The upload is {upload['status']}.")
            if total != upload["size"]:
                return _detail(400, f"Total size {total} differs from {upload['size']}.")
            if end < upload["offset"]:
                return web.json_response(upload_json(request, upload))  # a replayed chunk
            if start != upload["offset"]:
                return _detail(
                    409,
                    f"Chunk starts at {start} but the server has {upload['offset']} bytes.",
                    offset=upload["offset"],
                )
        lock = state.upload_locks.setdefault(upload["id"], asyncio.Lock())
        async with lock:
            if not is_new:
                current = store.get_upload(upload["id"])
                if current is None or current["offset"] != start:
                    return _detail(409, "The upload moved on.", offset=(current or {}).get("offset"))
            hasher = await _hasher_for(state, upload, start)
            written, error = await _receive(request, store.upload_path(upload["id"]), start, length, hasher)
            if error is not None:
                if is_new:
                    store.upload_path(upload["id"]).unlink(missing_ok=True)
                    state.upload_locks.pop(upload["id"], None)
                return _detail(400, error, offset=start)
            state.hashers[upload["id"]] = hasher
            if is_new:
                store.create_upload(upload["id"], upload["filename"], total, written)
            else:
                store.set_upload(upload["id"], offset=start + written)
            fresh = store.get_upload(upload["id"])
            assert fresh is not None
        return web.json_response(upload_json(request, fresh))

    async def get_upload(request: web.Request) -> web.Response:
        upload = store.get_upload(request.match_info["upload_id"])
        if upload is None:
            return _detail(404, "Chunked upload not found.")
        return web.json_response(upload_json(request, upload))

    async def complete_upload(request: web.Request) -> web.Response:
        upload_id = request.match_info["upload_id"]
        upload = store.get_upload(upload_id)
        if upload is None:
            return _detail(404, "Chunked upload not found.")
        payload = await _json_body(request) if request.can_read_body else {}
        claimed = str(payload.get("md5", "")).lower() if isinstance(payload, dict) else ""
        if upload["status"] in ("complete", "consumed"):
            if claimed and claimed != upload["md5"]:
                return web.json_response({"md5": ["Checksum does not match the upload."]}, status=400)
            return web.json_response(upload_json(request, upload))
        if upload["offset"] != upload["size"]:
            return _detail(
                400,
                f"Upload incomplete: {upload['offset']} of {upload['size']} bytes.",
                offset=upload["offset"],
            )
        hasher = state.hashers.pop(upload_id, None)
        if hasher is not None:
            actual = hasher.hexdigest()
        else:
            actual = await asyncio.to_thread(_md5_of, store.upload_path(upload_id), upload["size"])
        if claimed and claimed != actual:
            store.set_upload(upload_id, status="failed", md5=actual)
            return web.json_response(
                {"md5": [f"Checksum mismatch: client sent {claimed}, server computed {actual}."]},
                status=400,
            )
        store.set_upload(upload_id, status="complete", md5=actual)
        state.upload_locks.pop(upload_id, None)
        done = store.get_upload(upload_id)
        assert done is not None
        return web.json_response(upload_json(request, done))

    # -- models ------------------------------------------------------------------------

    def model_json(request: web.Request, model: dict[str, Any]) -> dict[str, Any]:
        out = {key: model.get(key) for key in ("id", *_MODEL_FIELDS)}
        out.update({k: v for k, v in model.items() if k not in out and k not in ("file_path", "tenant")})
        out.update(
            file=_file_url(request, model["file_path"]),
            file_name=model["file_name"],
            file_size=model["file_size"],
            checksum=model["checksum"],
            created=model["created"],
        )
        return out

    async def create_model(request: web.Request) -> web.Response:
        payload = await _json_body(request)
        if not isinstance(payload, dict):
            return _detail(400, "The body must be a JSON object.")
        errors: dict[str, list[str]] = {}
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            errors["name"] = ["This field is required."]
        if payload.get("configuration") is not None and not isinstance(payload["configuration"], dict):
            errors["configuration"] = ["Must be a JSON object."]
        upload_id = payload.get("chunked_upload")
        upload = store.get_upload(str(upload_id)) if upload_id else None
        if not upload_id:
            errors["chunked_upload"] = ["This field is required."]
        elif upload is None:
            errors["chunked_upload"] = [f"Chunked upload {upload_id!r} does not exist."]
        elif upload["status"] != "complete":
            errors["chunked_upload"] = [f"Chunked upload is {upload['status']}, not complete."]
        if errors or upload is None:
            return web.json_response(errors, status=400)
        fields = {key: payload.get(key) for key in _MODEL_FIELDS}
        fields.update({k: v for k, v in payload.items() if k not in fields and k not in _MODEL_SERVER_FIELDS})
        # On the loop thread like every other store call: the SQLite connection has
        # one owner. Moving the upload into place is a rename, not a copy.
        model = store.create_model(fields, upload, request.headers.get("Synapse-Tenant"))
        return web.json_response(model_json(request, model), status=201)

    async def get_model(request: web.Request) -> web.Response:
        model = store.get_model(_int_id(request))
        if model is None:
            return _detail(404, "Model not found.")
        return web.json_response(model_json(request, model))

    async def list_models(request: web.Request) -> web.Response:
        models = [model_json(request, m) for m in store.list_models(dict(request.query))]
        return web.json_response({"count": len(models), "results": models})

    # -- jobs and logs -----------------------------------------------------------------

    def job_errors(payload: dict[str, Any]) -> dict[str, list[str]]:
        status = payload.get("status")
        if status is not None and status not in JOB_STATUSES:
            return {"status": [f"{status!r} is not one of {', '.join(JOB_STATUSES)}."]}
        return {}

    async def create_job(request: web.Request) -> web.Response:
        payload = await _json_body(request)
        if not isinstance(payload, dict):
            return _detail(400, "The body must be a JSON object.")
        errors = job_errors(payload)
        if errors:
            return web.json_response(errors, status=400)
        fields = {k: v for k, v in payload.items() if k not in _READ_ONLY_JOB_FIELDS}
        fields.setdefault("status", "pending")
        job = store.create_job(fields, request.headers.get("Synapse-Tenant"))
        return web.json_response(job, status=201)

    async def get_job(request: web.Request) -> web.Response:
        job = store.get_job(_int_id(request))
        if job is None:
            return _detail(404, "Job not found.")
        return web.json_response(job)

    async def list_jobs(request: web.Request) -> web.Response:
        jobs = store.list_jobs()
        return web.json_response({"count": len(jobs), "results": jobs})

    async def update_job(request: web.Request) -> web.Response:
        payload = await _json_body(request)
        if not isinstance(payload, dict):
            return _detail(400, "The body must be a JSON object.")
        errors = job_errors(payload)
        if errors:
            return web.json_response(errors, status=400)
        changes = {k: v for k, v in payload.items() if k not in _READ_ONLY_JOB_FIELDS}
        job = store.update_job(_int_id(request), changes)
        if job is None:
            return _detail(404, "Job not found.")
        return web.json_response(job)

    async def create_logs(request: web.Request) -> web.Response:
        payload = await _json_body(request)
        if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
            return _detail(400, "The body must be a JSON list of objects.")
        count = store.add_logs(payload)
        return web.json_response({"count": count}, status=201)

    async def list_logs(request: web.Request) -> web.Response:
        entries = store.list_logs(request.query.get("job"))
        return web.json_response({"count": len(entries), "results": entries})

    # -- files -----------------------------------------------------------------------

    async def get_file(request: web.Request) -> web.StreamResponse:
        relative = PurePosixPath(request.match_info["path"])
        root = store.files_dir.resolve()
        target = (root / relative).resolve()
        if ".." in relative.parts or not target.is_relative_to(root) or not target.is_file():
            return _detail(404, "File not found.")
        request[FILE_PATH] = target
        return web.FileResponse(target, chunk_size=_WRITE_BLOCK)

    return [
        web.get("/data_collections/", list_data_collections),
        web.get("/data_collections/{id}/", get_data_collection),
        web.put("/chunked_upload/", put_chunk),
        web.put("/chunked_upload/{upload_id}/", put_chunk),
        web.get("/chunked_upload/{upload_id}/", get_upload),
        web.post("/chunked_upload/{upload_id}/", complete_upload),
        web.post("/chunked_upload/{upload_id}/complete/", complete_upload),
        web.post("/models/", create_model),
        web.get("/models/", list_models),
        web.get("/models/{id}/", get_model),
        web.post("/jobs/", create_job),
        web.get("/jobs/", list_jobs),
        web.get("/jobs/{id}/", get_job),
        web.patch("/jobs/{id}/", update_job),
        web.post("/logs/", create_logs),
        web.get("/logs/", list_logs),
        web.get("/files/{path:.+}", get_file),
    ]


def _safe_filename(name: str) -> str | None:
    base = PurePosixPath(name.replace("\\", "/")).name or "upload.bin"
    if base in (".", "..") or "\x00" in base:
        return None
    return base


def _md5_of(path: Path, size: int) -> str:
    return _prefix_hasher(path, size).hexdigest()


def _prefix_hasher(path: Path, size: int) -> Any:
    """md5 state of the first ``size`` bytes of ``path``."""
    hasher = hashlib.md5()
    with path.open("rb") as fh:
        remaining = size
        while remaining > 0 and (block := fh.read(min(_WRITE_BLOCK, remaining))):
            hasher.update(block)
            remaining -= len(block)
    return hasher


async def _hasher_for(state: BackendState, upload: dict[str, Any], offset: int) -> Any:
    """A copy of the running md5 up to ``offset`` (rebuilt from disk after a restart).

    A copy, so a chunk that fails half-way leaves the stored state untouched.
    """
    hasher = state.hashers.get(upload["id"])
    if hasher is None:
        path = state.store.upload_path(upload["id"])
        hasher = await asyncio.to_thread(_prefix_hasher, path, offset) if offset else hashlib.md5()
    return hasher.copy()


def _write_block(fh: BinaryIO, hasher: Any, block: bytes) -> None:
    fh.write(block)
    hasher.update(block)


async def _receive(
    request: web.Request, path: Path, start: int, length: int, hasher: Any
) -> tuple[int, str | None]:
    """Stream the body into ``path`` at ``start``; hash it. On a short or broken
    body, truncate back to ``start`` and return an error (the chunk never counts)."""
    fh = await asyncio.to_thread(_open_at, path, start)
    written = 0
    pending: asyncio.Future[None] | None = None
    parts: list[bytes] = []
    buffered = 0
    error: str | None = None
    try:
        while True:
            data = await request.content.readany()
            if not data:
                break
            parts.append(data)
            buffered += len(data)
            if buffered >= _WRITE_BLOCK:
                if pending is not None:
                    await pending
                block = b"".join(parts)
                parts.clear()
                buffered = 0
                written += len(block)
                pending = asyncio.ensure_future(asyncio.to_thread(_write_block, fh, hasher, block))
        if pending is not None:
            await pending
            pending = None
        if parts:
            block = b"".join(parts)
            written += len(block)
            await asyncio.to_thread(_write_block, fh, hasher, block)
        if written != length:
            error = f"Chunk body has {written} bytes, Content-Range says {length}."
    except (OSError, asyncio.IncompleteReadError, HttpProcessingError, ClientError) as exc:
        # The client went away or sent a malformed body: the chunk never counts.
        error = f"Chunk body was cut off: {type(exc).__name__}."
    finally:
        if pending is not None:
            try:
                await pending
            except OSError:
                pass
        if error is not None:
            await asyncio.to_thread(_truncate_close, fh, start)
        else:
            await asyncio.to_thread(fh.close)
    return written, error


def _open_at(path: Path, start: int) -> BinaryIO:
    fh = path.open("r+b") if path.exists() else path.open("wb")
    fh.seek(start)
    return fh


def _truncate_close(fh: BinaryIO, start: int) -> None:
    try:
        fh.truncate(start)
    finally:
        fh.close()
