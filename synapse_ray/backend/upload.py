"""Chunked, resumable, streaming upload (``PUT chunked_upload/``).

The protocol follows Synapse's: the first chunk is ``PUT chunked_upload/``
with ``Content-Range: bytes start-end/total``; the answer carries ``id``,
``url`` (where later chunks go) and ``offset`` (bytes stored). The upload is
finished by ``POST chunked_upload/{id}/complete/`` with the whole file's md5,
which the server checks against its own. Files are read in 1 MiB blocks and
streamed, so memory does not grow with file or chunk size. When a chunk fails
(dropped connection, timeout, 5xx), the client asks the server for the
current offset and resumes from there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from .errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BackendValidationError,
    ChecksumMismatchError,
    ConflictError,
    LocalPathError,
    RateLimitError,
    ServerError,
)
from .policy import IDEMPOTENCY_HEADER, response_json
from .retrying import Backoff
from .shapes import ChunkedUpload

if TYPE_CHECKING:
    from .client import BackendClient

__all__ = [
    "BLOCK_SIZE",
    "MAX_NAME_BYTES",
    "check_model_fields",
    "chunked_upload",
    "prepared_source",
    "zip_directory",
]

log = structlog.get_logger("synapse_ray.backend")

BLOCK_SIZE = 1024 * 1024
MAX_NAME_BYTES = 255  # a file name on the server's disk (and in the real API)
_RESUMABLE = (BackendConnectionError, BackendTimeoutError, ServerError, RateLimitError)


def check_model_fields(fields: Mapping[str, object]) -> None:
    """Refuse, before any byte is sent, what ``POST models/`` would refuse after the upload."""
    errors: dict[str, list[str]] = {}
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["This field is required."]
    configuration = fields.get("configuration")
    if configuration is not None and not isinstance(configuration, Mapping):
        errors["configuration"] = [f"Must be a JSON object, got {type(configuration).__name__}."]
    if errors:
        raise BackendValidationError(
            "create_model got invalid field(s): "
            + "; ".join(f"{key}: {msgs[0]}" for key, msgs in errors.items()),
            errors=errors,
        )


def _check_upload_name(name: str, path: Path) -> None:
    size = len(name.encode("utf-8", "surrogateescape"))
    if "\x00" in name or "/" in name or size > MAX_NAME_BYTES:
        raise LocalPathError(
            f"Cannot upload {str(path)!r}: its file name must be at most {MAX_NAME_BYTES} bytes "
            f"without NUL or '/', got {size} bytes; rename it first.",
            path=str(path),
        )


@contextmanager
def prepared_source(path: Path) -> Iterator[tuple[Path, str]]:
    """Validate ``path`` and yield ``(file_to_send, upload_name)``.

    A directory is zipped to a temporary file first (removed afterwards).
    Missing paths, empty files and directories without files are refused here,
    before anything is written on the server.
    """
    if not path.exists():
        raise LocalPathError(f"Cannot upload {str(path)!r}: no such file or directory.", path=str(path))
    if path.is_file():
        if path.stat().st_size == 0:
            raise LocalPathError(f"Cannot upload {str(path)!r}: the file is empty.", path=str(path))
        _check_upload_name(path.name, path)
        yield path, path.name
        return
    if not path.is_dir():
        raise LocalPathError(f"Cannot upload {str(path)!r}: not a file or directory.", path=str(path))
    if not any(child.is_file() for child in path.rglob("*")):
        raise LocalPathError(f"Cannot upload {str(path)!r}: the directory contains no files.", path=str(path))
    _check_upload_name(f"{path.name or 'model'}.zip", path)
    fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".zip")
    os.close(fd)
    archive = Path(tmp_name)
    try:
        zip_directory(path, archive)
        yield archive, f"{path.name or 'model'}.zip"
    finally:
        archive.unlink(missing_ok=True)


def zip_directory(source: Path, archive: Path) -> None:
    """Zip ``source``'s files (paths relative to it) into ``archive``, streaming.

    Level 1 deflate: checkpoints compress poorly, so speed matters more.
    """
    with zipfile.ZipFile(
        archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True
    ) as zf:
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(source).as_posix())


class _Md5Once:
    """md5 of the file fed in order; bytes re-sent after a resume are not re-hashed.

    Hashing runs on one helper thread (hashlib releases the GIL) so it overlaps
    with sending; at most ``_MAX_PENDING`` blocks wait, which bounds memory.
    """

    _MAX_PENDING = 2

    def __init__(self) -> None:
        self.hasher = hashlib.md5()
        self.upto = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-md5")
        self._pending: deque[Future[None]] = deque()

    def feed(self, position: int, block: bytes) -> None:
        end = position + len(block)
        if end <= self.upto:
            return
        skip = max(0, self.upto - position)
        self.upto = end
        while len(self._pending) >= self._MAX_PENDING:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.hasher.update, memoryview(block)[skip:]))

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        return self.hasher.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _read_range(fh: Any, start: int, end: int, md5: _Md5Once) -> Iterator[bytes]:
    """Yield ``[start, end)`` of ``fh`` in blocks, hashing as it goes."""
    fh.seek(start)
    position = start
    while position < end:
        block = fh.read(min(BLOCK_SIZE, end - position))
        if not block:
            raise LocalPathError("The file shrank while it was being uploaded.")
        md5.feed(position, block)
        position += len(block)
        yield block


def chunked_upload(client: BackendClient, path: Path, filename: str) -> ChunkedUpload:
    """Upload ``path`` in ``spec.chunk_size`` chunks and complete it; returns the upload."""
    md5 = _Md5Once()
    try:
        return _upload(client, path, filename, md5)
    finally:
        md5.close()


def _upload(client: BackendClient, path: Path, filename: str, md5: _Md5Once) -> ChunkedUpload:
    spec = client.spec
    total = path.stat().st_size
    url = "chunked_upload/"
    state: dict[str, Any] | None = None
    first_key = uuid.uuid4().hex
    offset = 0
    backoff = Backoff(
        spec.backoff, spec.max_retries, what=f"the upload of {filename!r}", deadline_s=spec.total_timeout
    )
    started = time.monotonic()
    with path.open("rb") as fh:
        while offset < total:
            end = min(offset + spec.chunk_size, total)
            headers = {
                "Content-Range": f"bytes {offset}-{end - 1}/{total}",
                "Content-Length": str(end - offset),
                "Content-Type": "application/octet-stream",
            }
            params = None
            if state is None:
                # A retried first chunk replays the stored answer instead of
                # opening a second upload.
                headers[IDEMPOTENCY_HEADER] = first_key
                params = {"filename": filename}
            try:
                response = client.request(
                    "PUT",
                    url,
                    params=params,
                    content=_read_range(fh, offset, end, md5),
                    headers=headers,
                    retries=0,
                    allow_status=(409,),
                )
            except _RESUMABLE as exc:
                backoff.retry(
                    exc,
                    exc.__cause__,
                    delay=getattr(exc, "retry_after", None),
                    event="backend.upload.resume",
                    offset=offset,
                )
                if state is not None:
                    state = response_json(client.request("GET", url, resource="chunked upload"))
                    offset = int(state["offset"])
                else:
                    offset = 0
                continue
            body = response_json(response)
            if response.status_code == 409:
                conflict = ConflictError(
                    f"The upload offset kept disagreeing with the server at byte {offset}",
                    status=409,
                    url=str(response.request.url),
                    method="PUT",
                    body=client.redact(body),
                )
                backoff.retry(conflict, delay=0.0, event="backend.upload.resume", offset=offset)
                offset = int(body["offset"])
                continue
            state = body
            url = str(body["url"])
            offset = int(body["offset"])
            backoff.progressed()
    assert state is not None  # total > 0 is guaranteed by prepared_source
    if md5.upto != total:
        raise BackendError("Internal error: the upload hash does not cover the whole file.")
    digest = md5.hexdigest()
    try:
        response = client.request("POST", f"chunked_upload/{state['id']}/complete/", json={"md5": digest})
    except BackendValidationError as exc:
        errors = exc.errors if isinstance(exc.errors, dict) else {}
        if "md5" in errors:
            raise ChecksumMismatchError(
                f"The server's md5 of {filename!r} differs from the local one ({digest}): {errors['md5']}",
                expected=digest,
                url=exc.url,
            ) from exc
        raise
    elapsed = time.monotonic() - started
    log.debug(
        "backend.upload.complete",
        bytes=total,
        seconds=round(elapsed, 3),
        mb_per_s=round(total / 1e6 / elapsed, 1) if elapsed > 0 else None,
    )
    return cast(ChunkedUpload, response_json(response))
