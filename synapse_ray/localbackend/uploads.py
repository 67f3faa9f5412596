"""``chunked_upload/``: resumable uploads that become model files.

Chunk bodies stream to ``uploads/{id}.part`` in 1 MiB blocks and are hashed as
they arrive, on worker threads, so one large upload does not stall concurrent
requests. A chunk that is cut off never counts: the file is truncated back.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError

from .common import SETTINGS, STORE, UPLOADS, UploadState, db, detail, json_body, origin
from .store import Store

__all__ = ["routes"]

# At most 19 digits: every value fits SQLite's INTEGER, and a 5000-digit number
# is refused by the pattern instead of failing int() with a 500.
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")
_MAX_NAME_BYTES = 255
_WRITE_BLOCK = 1024 * 1024


def upload_json(request: web.Request, upload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": upload["id"],
        "url": f"{origin(request)}/chunked_upload/{upload['id']}/",
        "offset": upload["offset"],
        "size": upload["size"],
        "filename": upload["filename"],
        "status": upload["status"],
        **({"md5": upload["md5"]} if upload.get("md5") else {}),
    }


async def put_chunk(request: web.Request) -> web.Response:
    store, uploads = request.app[STORE], request.app[UPLOADS]
    match = _CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
    if match is None:
        return detail(400, "Content-Range 'bytes start-end/total' is required.")
    start, end, total = (int(g) for g in match.groups())
    if end < start or end >= total:
        return detail(400, f"Invalid Content-Range {match.group(0)!r}.")
    limits = request.app[SETTINGS].limits
    length = end - start + 1
    if length > limits.max_chunk_bytes:
        return detail(413, f"A chunk may have at most {limits.max_chunk_bytes} bytes, this one has {length}.")
    if request.content_length is not None and request.content_length != length:
        return detail(400, "Content-Length does not match Content-Range.")
    upload_id = request.match_info.get("upload_id")
    if upload_id is None:
        refusal = await _refuse_new_upload(request, start, total)
        if refusal is not None:
            return refusal
        filename = _safe_filename(request.query.get("filename", ""))
        if filename is None:
            return detail(
                400,
                f"The 'filename' query parameter must be a file name of at most {_MAX_NAME_BYTES} "
                f"bytes without NUL.",
            )
        upload: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "filename": filename,
            "size": total,
            "offset": 0,
            "status": "uploading",
        }
        is_new = True
    else:
        found = await db(request, store.get_upload, upload_id)
        if found is None:
            return detail(404, "Chunked upload not found.")
        upload = found
        is_new = False
        if upload["status"] != "uploading":
            return detail(400, f"The upload is {upload['status']}.")
        if total != upload["size"]:
            return detail(400, f"Total size {total} differs from {upload['size']}.")
        if end < upload["offset"]:
            return web.json_response(upload_json(request, upload))  # a replayed chunk
        if start != upload["offset"]:
            return detail(
                409,
                f"Chunk starts at {start} but the server has {upload['offset']} bytes.",
                offset=upload["offset"],
            )
    lock = uploads.lock(upload["id"])
    async with lock:
        if not is_new:
            current = await db(request, store.get_upload, upload["id"])
            if current is None or current["offset"] != start:
                return detail(409, "The upload moved on.", offset=(current or {}).get("offset"))
        hasher = await _hasher_for(store, uploads, upload, start)
        written, error = await _receive(
            request, store.upload_path(upload["id"]), start, length, hasher, limits.body_read_timeout
        )
        if error is not None:
            if is_new:
                store.upload_path(upload["id"]).unlink(missing_ok=True)
                uploads.locks.pop(upload["id"], None)
            return detail(400, error, offset=start)
        uploads.hashers[upload["id"]] = hasher
        if is_new:
            tenant = request.headers.get("Synapse-Tenant")
            await db(request, store.create_upload, upload["id"], upload["filename"], total, written, tenant)
        else:
            await db(request, store.set_upload, upload["id"], offset=start + written)
        fresh = await db(request, store.get_upload, upload["id"])
        assert fresh is not None
    return web.json_response(upload_json(request, fresh))


async def get_upload(request: web.Request) -> web.Response:
    store = request.app[STORE]
    upload = await db(request, store.get_upload, request.match_info["upload_id"])
    if upload is None:
        return detail(404, "Chunked upload not found.")
    return web.json_response(upload_json(request, upload))


async def complete_upload(request: web.Request) -> web.Response:
    store, uploads = request.app[STORE], request.app[UPLOADS]
    upload_id = request.match_info["upload_id"]
    upload = await db(request, store.get_upload, upload_id)
    if upload is None:
        return detail(404, "Chunked upload not found.")
    payload = await json_body(request) if request.body_exists else {}
    claimed = payload.get("md5") if isinstance(payload, dict) else None
    if not isinstance(claimed, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", claimed):
        # Verification is the point of completing: an upload is never accepted unchecked.
        return web.json_response({"md5": ["Required: the md5 of the whole file, 32 hex digits."]}, status=400)
    claimed = claimed.lower()
    if upload["status"] == "failed":
        return detail(400, "The upload failed its md5 check and cannot be completed; start a new upload.")
    if upload["status"] in ("complete", "consumed"):
        if claimed and claimed != upload["md5"]:
            return web.json_response({"md5": ["Checksum does not match the upload."]}, status=400)
        return web.json_response(upload_json(request, upload))
    if upload["offset"] != upload["size"]:
        return detail(
            400,
            f"Upload incomplete: {upload['offset']} of {upload['size']} bytes.",
            offset=upload["offset"],
        )
    hasher = uploads.hashers.pop(upload_id, None)
    if hasher is not None:
        actual = hasher.hexdigest()
    else:
        actual = await asyncio.to_thread(_md5_of, store.upload_path(upload_id), upload["size"])
    if claimed != actual:
        await db(request, store.set_upload, upload_id, status="failed", md5=actual)
        await asyncio.to_thread(store.upload_path(upload_id).unlink, True)
        return web.json_response(
            {"md5": [f"Checksum mismatch: client sent {claimed}, server computed {actual}."]},
            status=400,
        )
    await db(request, store.set_upload, upload_id, status="complete", md5=actual)
    uploads.locks.pop(upload_id, None)
    done = await db(request, store.get_upload, upload_id)
    assert done is not None
    return web.json_response(upload_json(request, done))


routes = [
    web.put("/chunked_upload/", put_chunk),
    web.put("/chunked_upload/{upload_id}/", put_chunk),
    web.get("/chunked_upload/{upload_id}/", get_upload),
    web.post("/chunked_upload/{upload_id}/", complete_upload),
    web.post("/chunked_upload/{upload_id}/complete/", complete_upload),
]


async def _refuse_new_upload(request: web.Request, start: int, total: int) -> web.Response | None:
    """Everything that would fail later, refused before the first byte is stored."""
    limits = request.app[SETTINGS].limits
    store = request.app[STORE]
    if start != 0:
        return detail(400, "A new chunked upload must start at byte 0.")
    if total > limits.max_upload_bytes:
        return detail(
            413, f"An upload may have at most {limits.max_upload_bytes} bytes, this one declares {total}."
        )
    tenant = request.headers.get("Synapse-Tenant")
    if await db(request, store.count_open_uploads, tenant) >= limits.max_open_uploads:
        return detail(
            400,
            f"Too many unfinished uploads ({limits.max_open_uploads}) for this tenant: complete them "
            f"or let them expire (7 days).",
        )
    free = (await asyncio.to_thread(shutil.disk_usage, store.uploads_dir)).free
    if total + limits.free_disk_margin > free:
        return detail(507, f"Not enough free disk for {total} bytes ({free} free on the server).")
    return None


def _safe_filename(name: str) -> str | None:
    base = PurePosixPath(name.replace("\\", "/")).name or "upload.bin"
    if base in (".", "..") or "\x00" in base:
        return None
    if len(base.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        return None
    return base


def _md5_of(path: Path, size: int) -> str:
    if path.stat().st_size == size:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "md5").hexdigest()
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


async def _hasher_for(store: Store, uploads: UploadState, upload: dict[str, Any], offset: int) -> Any:
    """A copy of the running md5 up to ``offset`` (rebuilt from disk after a restart).

    A copy, so a chunk that fails half-way leaves the stored state untouched.
    """
    hasher = uploads.hashers.get(upload["id"])
    if hasher is None:
        path = store.upload_path(upload["id"])
        hasher = await asyncio.to_thread(_prefix_hasher, path, offset) if offset else hashlib.md5()
    return hasher.copy()


def _write_block(fh: BinaryIO, hasher: Any, block: bytes) -> None:
    fh.write(block)
    hasher.update(block)


async def _receive(
    request: web.Request, path: Path, start: int, length: int, hasher: Any, read_timeout: float
) -> tuple[int, str | None]:
    """Stream the body into ``path`` at ``start``; hash it. On a short, long, stalled
    or broken body, truncate back to ``start`` and return an error (the chunk never
    counts). Reading stops at the declared length: extra bytes are never written."""
    fh = await asyncio.to_thread(_open_at, path, start)
    written = 0
    pending: asyncio.Future[None] | None = None
    parts: list[bytes] = []
    buffered = 0
    error: str | None = None
    loop = asyncio.get_running_loop()
    try:
        # One timeout for the whole body, pushed back after every read: a stall
        # of read_timeout ends it (cheaper than a wait_for per read).
        async with asyncio.timeout(read_timeout) as stall:
            while True:
                data = await request.content.readany()
                stall.reschedule(loop.time() + read_timeout)
                if not data:
                    break
                if written + buffered + len(data) > length:
                    error = f"Chunk body is longer than the {length} bytes Content-Range declares."
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
        if parts and error is None:
            block = b"".join(parts)
            written += len(block)
            await asyncio.to_thread(_write_block, fh, hasher, block)
        if error is None and written != length:
            error = f"Chunk body has {written} bytes, Content-Range says {length}."
    except TimeoutError:
        error = f"Chunk body stalled: no bytes for {read_timeout:g} s."
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
