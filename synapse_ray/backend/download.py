"""Streaming, verified, resumable downloads.

Bytes go to a hidden temp file next to the target and are renamed into place
only after the md5 (when known) matches, so a reader never sees a partial or
corrupt file. A connection dropped mid-body is resumed with a ``Range``
request, and the answer must resume exactly where we stopped. Redirects are
followed by hand: the token goes only to the backend's own origin. Names are
checked before any request: a name that would escape the destination
directory is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import structlog

from .errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    ChecksumMismatchError,
    UnsafePathError,
)
from .retrying import Backoff

if TYPE_CHECKING:
    from .client import BackendClient

__all__ = ["MAX_REDIRECTS", "download_file", "safe_target"]

log = structlog.get_logger("synapse_ray.backend")

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


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


def _resume_start(response: httpx.Response) -> int:
    """Where a 206 answer's ``Content-Range`` says its bytes start (-1 if unreadable)."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else -1


class _Download:
    """One file's transfer state: the temp file, its running md5, the bytes so far."""

    def __init__(self, client: BackendClient, url: str, fh: BinaryIO, size: int | None) -> None:
        self.client = client
        self.url = url
        self.fh = fh
        self.size = size
        self.hasher = hashlib.md5()
        self.received = 0

    def restart(self) -> None:
        self.fh.seek(0)
        self.fh.truncate()
        self.hasher = hashlib.md5()
        self.received = 0

    def open(self) -> httpx.Response:
        """GET (or resume) the file, following redirects; the token stays on its origin."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept-Encoding": "identity"}
            if self.received:
                headers["Range"] = f"bytes={self.received}-"
            response = self.client.send_stream(
                "GET", url, headers=headers, resource=self.url, allow_status=_REDIRECTS
            )
            if response.status_code not in _REDIRECTS:
                return response
            response.close()
            location = response.headers.get("Location")
            if not location:
                raise BackendError(
                    f"Download of {self.url} was redirected ({response.status_code}) without a Location.",
                    url=self.url,
                    method="GET",
                )
            url = urljoin(str(response.url), location)
        raise BackendError(
            f"Download of {self.url} was redirected more than {MAX_REDIRECTS} times.",
            url=self.url,
            method="GET",
        )

    def receive(self, response: httpx.Response) -> None:
        if self.received:
            if response.status_code != 206:
                self.restart()  # the server ignored Range: take the whole body again
            elif _resume_start(response) != self.received:
                raise BackendError(
                    f"Download of {self.url} resumed at the wrong place: asked for bytes "
                    f"{self.received}- and got Content-Range "
                    f"{response.headers.get('Content-Range')!r}; the partial file was removed.",
                    url=self.url,
                    method="GET",
                )
        expected = _expected_length(response, self.received)
        if self.size is not None and expected is not None and expected > self.size:
            raise self._too_big(expected)
        for block in response.iter_bytes():
            self.fh.write(block)
            self.hasher.update(block)
            self.received += len(block)
            if self.size is not None and self.received > self.size:
                raise self._too_big(self.received)

    def _too_big(self, length: int) -> ChecksumMismatchError:
        return ChecksumMismatchError(
            f"Download of {self.url} is larger than its expected size: {length} > {self.size} bytes; "
            f"stopped and removed the partial file.",
            url=self.url,
            expected=str(self.size),
            actual=str(length),
        )


def _expected_length(response: httpx.Response, already: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return int(length) + (already if response.status_code == 206 else 0)


def download_file(
    client: BackendClient,
    url: str,
    dest_dir: Path,
    *,
    name: str | None = None,
    checksum: str | None = None,
    size: int | None = None,
) -> Path:
    """See :meth:`BackendClient.download`."""
    target = safe_target(dest_dir, name if name is not None else _name_from_url(url))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    spec = client.spec
    backoff = Backoff(
        spec.backoff, spec.max_retries, what=f"the download of {url}", deadline_s=spec.total_timeout
    )
    started = time.monotonic()
    try:
        with tmp.open("wb") as fh:
            state = _Download(client, url, fh, size)
            while True:
                before = state.received
                try:
                    response = state.open()
                    try:
                        state.receive(response)
                    finally:
                        response.close()
                    break
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    if state.received > before:
                        backoff.progressed()
                    backoff.retry(
                        _transfer_error(url, state.received, exc),
                        client.detach(exc),
                        event="backend.download.resume",
                        path=urlsplit(url).path,
                        offset=state.received,
                    )
        actual = state.hasher.hexdigest()
        if checksum and actual.lower() != checksum.lower():
            raise ChecksumMismatchError(
                f"Checksum mismatch for {url}: expected md5 {checksum}, got {actual}; "
                f"the partial file was removed.",
                expected=checksum,
                actual=actual,
                url=url,
            )
        if size is not None and state.received != size:
            raise ChecksumMismatchError(
                f"Download of {url} has {state.received} bytes, expected {size}; "
                f"the partial file was removed.",
                expected=str(size),
                actual=str(state.received),
                url=url,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug(
        "backend.download.complete",
        path=urlsplit(url).path,
        bytes=state.received,
        seconds=round(time.monotonic() - started, 3),
    )
    return target


def _transfer_error(url: str, received: int, exc: Exception) -> BackendError:
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeoutError(
            f"Timed out downloading {url} after {received} bytes", url=url, method="GET"
        )
    return BackendConnectionError(
        f"Connection lost downloading {url} after {received} bytes: {type(exc).__name__}: {exc}",
        url=url,
        method="GET",
    )
