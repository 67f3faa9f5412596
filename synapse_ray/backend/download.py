"""Streaming, verified, resumable downloads.

Bytes go to a hidden temp file next to the target and are renamed into place
only after the md5 (when known) matches, so a reader never sees a partial or
corrupt file. A connection dropped mid-body is resumed with a ``Range``
request. Names are checked before any request: a name that would escape the
destination directory is refused.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import httpx
import structlog

from .errors import (
    BackendConnectionError,
    BackendTimeoutError,
    ChecksumMismatchError,
    UnsafePathError,
)
from .policy import backoff_delay

if TYPE_CHECKING:
    from .client import BackendClient

__all__ = ["download_file", "safe_target"]

log = structlog.get_logger("synapse_ray.backend")


def safe_target(dest_dir: Path, name: str) -> Path:
    """``dest_dir/name`` if it stays inside ``dest_dir``, else :class:`UnsafePathError`.

    Relative sub-paths (``images/a.png``) are allowed; absolute paths, drive
    letters, ``..`` components and NUL bytes are not. Backslashes count as
    separators so a Windows-style ``..\\x`` is caught too.
    """
    if not name or "\x00" in name:
        raise UnsafePathError(f"Refusing file name {name!r}: empty or contains NUL.", name=name)
    normalized = name.replace("\\", "/")
    pure = PurePosixPath(normalized)
    if pure.is_absolute() or PureWindowsPath(name).drive or ".." in pure.parts or not pure.parts:
        raise UnsafePathError(
            f"Refusing file name {name!r}: it would be written outside {str(dest_dir)!r}.",
            name=name,
            dest=str(dest_dir),
        )
    root = dest_dir.resolve()
    target = (root / pure).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafePathError(
            f"Refusing file name {name!r}: it resolves outside {str(dest_dir)!r}.",
            name=name,
            dest=str(dest_dir),
        )
    return target


def _name_from_url(url: str) -> str:
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def download_file(
    client: BackendClient,
    url: str,
    dest_dir: Path,
    *,
    name: str | None = None,
    checksum: str | None = None,
) -> Path:
    """See :meth:`BackendClient.download`."""
    target = safe_target(dest_dir, name if name is not None else _name_from_url(url))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    spec = client.spec
    hasher = hashlib.md5()
    received = 0
    failures = 0
    started = time.monotonic()
    try:
        with tmp.open("wb") as fh:
            while True:
                headers = {"Accept-Encoding": "identity"}
                if received:
                    headers["Range"] = f"bytes={received}-"
                try:
                    with client.stream("GET", url, headers=headers, resource=url) as response:
                        if received and response.status_code != 206:
                            fh.seek(0)
                            fh.truncate()
                            hasher = hashlib.md5()
                            received = 0
                        for block in response.iter_bytes():
                            fh.write(block)
                            hasher.update(block)
                            received += len(block)
                    break
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    failures += 1
                    if failures > spec.max_retries:
                        if isinstance(exc, httpx.TimeoutException):
                            raise BackendTimeoutError(
                                f"Timed out downloading {url} after {received} bytes",
                                url=url,
                                method="GET",
                            ) from exc
                        raise BackendConnectionError(
                            f"Connection lost downloading {url} after {received} bytes: {exc}",
                            url=url,
                            method="GET",
                        ) from exc
                    log.warning(
                        "backend.download.resume",
                        path=urlsplit(url).path,
                        offset=received,
                        attempt=failures,
                        reason=type(exc).__name__,
                    )
                    time.sleep(backoff_delay(spec.backoff, failures - 1))
        actual = hasher.hexdigest()
        if checksum and actual.lower() != checksum.lower():
            raise ChecksumMismatchError(
                f"Checksum mismatch for {url}: expected md5 {checksum}, got {actual}; "
                f"the partial file was removed.",
                expected=checksum,
                actual=actual,
                url=url,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug(
        "backend.download.complete",
        path=urlsplit(url).path,
        bytes=received,
        seconds=round(time.monotonic() - started, 3),
    )
    return target
