"""The client against a lying, slow or hostile server: every failure is typed and secret-free."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from synapse_ray.backend import (
    AuthenticationError,
    BackendClient,
    BackendConnectionError,
    BackendError,
    BackendSpec,
    BackendTimeoutError,
    BackendValidationError,
    ChecksumMismatchError,
    ConflictError,
    LocalPathError,
)
from synapse_ray.localbackend import LocalBackendServer, register_dataset

TOKEN = "s3cr3t-token-value-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_secret_free(err: BaseException, secret: str) -> None:
    """Not in str, repr, fields, the cause chain's attributes, or the pickle."""
    assert secret not in str(err) and secret not in repr(err)
    assert secret not in repr(vars(err))
    assert secret.encode() not in pickle.dumps(err)
    seen = err.__cause__
    while seen is not None:
        assert secret not in repr(seen) and secret not in str(seen)
        assert secret not in repr(vars(seen))
        if isinstance(seen, httpx.RequestError):
            with pytest.raises(RuntimeError):
                _ = seen.request  # no request (and so no headers) travels with it
        seen = seen.__cause__
    restored = pickle.loads(pickle.dumps(err))
    assert secret not in repr(vars(restored)) and secret not in str(restored.__cause__)


# -- secrets -----------------------------------------------------------------------------


def test_pickled_connection_error_does_not_carry_the_token() -> None:
    spec = BackendSpec(base_url=f"http://127.0.0.1:{_free_port()}/", token=TOKEN, max_retries=0)
    with BackendClient(spec) as client, pytest.raises(BackendConnectionError) as info:
        client.get_job(1)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    _assert_secret_free(info.value, TOKEN)


def test_pickled_timeout_error_does_not_carry_the_token(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"read_timeout": 0.3, "max_retries": 0})
    server.faults.add("stall", seconds=1.0, count=1)
    with BackendClient(spec) as client, pytest.raises(BackendTimeoutError) as info:
        client.get_job(1)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    _assert_secret_free(info.value, server.token)


def _echo_transport(status: int) -> httpx.MockTransport:
    """A server that echoes the token header back in its error body (a real one cannot be made to)."""

    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["Synapse-Access-Token"]
        body = {"detail": f"bad header {echoed}", echoed: [f"value {echoed}"], "offset": 0}
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "error", "field"), [(400, BackendValidationError, "errors"), (409, ConflictError, "body")]
)
def test_token_echoed_by_the_server_is_scrubbed_from_error_fields(
    status: int, error: type, field: str
) -> None:
    spec = BackendSpec(base_url="http://127.0.0.1:9/", token=TOKEN, max_retries=0)
    with BackendClient(spec, transport=_echo_transport(status)) as client, pytest.raises(error) as info:
        client.create_job({"action": "a"})
    assert "***" in repr(getattr(info.value, field))
    _assert_secret_free(info.value, TOKEN)


# -- downloads ----------------------------------------------------------------------------


def _cut_then_lie_transport(data: bytes, lie_start: int) -> httpx.MockTransport:
    """First answer: half the body, then the connection breaks. Second: a 206 starting elsewhere."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:

            def broken() -> Iterator[bytes]:
                yield data[: len(data) // 2]
                raise httpx.ReadError("connection reset")

            return httpx.Response(200, headers={"Content-Length": str(len(data))}, stream=_Stream(broken()))
        rest = data[lie_start:]
        headers = {"Content-Range": f"bytes {lie_start}-{len(data) - 1}/{len(data)}"}
        return httpx.Response(206, headers=headers, content=rest)

    return httpx.MockTransport(handler)


class _Stream(httpx.SyncByteStream):
    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts


def test_resumed_download_that_starts_at_the_wrong_byte_is_refused(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    spec = BackendSpec(base_url="http://127.0.0.1:9/", token=TOKEN, backoff=0.0)
    with BackendClient(spec, transport=_cut_then_lie_transport(data, lie_start=0)) as client:
        with pytest.raises(BackendError, match="resumed at the wrong place"):
            client.download("http://127.0.0.1:9/files/x.bin", tmp_path)  # no checksum to save us
    assert list(tmp_path.iterdir()) == []


def test_resumed_download_at_the_right_byte_completes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    spec = BackendSpec(base_url="http://127.0.0.1:9/", token=TOKEN, backoff=0.0)
    with BackendClient(spec, transport=_cut_then_lie_transport(data, lie_start=len(data) // 2)) as client:
        path = client.download("http://127.0.0.1:9/files/x.bin", tmp_path)
    assert path.read_bytes() == data


class _RedirectServer:
    """A real HTTP server on loopback that redirects, and records who sent the token."""

    def __init__(self) -> None:
        self.tokens: dict[str, str | None] = {}
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.target = "http://127.0.0.1:9/"

    async def _start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/same", self._same),
                web.get("/away", self._away),
                web.get("/loop", self._loop),
                web.get("/file", self._file),
            ]
        )
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _same(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/file")

    async def _away(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.target)

    async def _loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _file(self, request: web.Request) -> web.Response:
        self.tokens["file"] = request.headers.get("Synapse-Access-Token")
        return web.Response(body=b"payload")

    def __enter__(self) -> _RedirectServer:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_same_origin_redirect_is_followed_with_the_token(tmp_path: Path) -> None:
    with _RedirectServer() as srv:
        spec = BackendSpec(base_url=f"http://127.0.0.1:{srv.port}/", token=TOKEN)
        with BackendClient(spec) as client:
            path = client.download(f"http://127.0.0.1:{srv.port}/same", tmp_path, name="f.bin")
    assert path.read_bytes() == b"payload"
    assert srv.tokens["file"] == f"Token {TOKEN}"


def test_cross_origin_redirect_drops_the_token(server: LocalBackendServer, make_file, tmp_path: Path) -> None:
    register_dataset(server.data_dir, "d", [make_file(size=100)])
    with _RedirectServer() as srv:
        srv.target = f"{server.url}files/data_collections/1/blob.bin"
        spec = BackendSpec(base_url=f"http://127.0.0.1:{srv.port}/", token=server.token, max_retries=0)
        with BackendClient(spec) as client, pytest.raises(AuthenticationError):
            # the backend's file URL is another origin for this client: no token goes there
            client.download(f"http://127.0.0.1:{srv.port}/away", tmp_path / "out", name="f.bin")
    assert list((tmp_path / "out").iterdir()) == []


def test_redirect_loop_fails_clearly(tmp_path: Path) -> None:
    with _RedirectServer() as srv:
        spec = BackendSpec(base_url=f"http://127.0.0.1:{srv.port}/", token=TOKEN)
        with BackendClient(spec) as client, pytest.raises(BackendError, match="redirected more than"):
            client.download(f"http://127.0.0.1:{srv.port}/loop", tmp_path, name="f.bin")
    assert list(tmp_path.iterdir()) == []


def test_redirect_on_an_api_call_is_an_error_not_a_success() -> None:
    with _RedirectServer() as srv:
        spec = BackendSpec(base_url=f"http://127.0.0.1:{srv.port}/", token=TOKEN)
        with BackendClient(spec) as client, pytest.raises(BackendError, match="Unexpected redirect"):
            client.request("GET", "same")


def test_download_larger_than_expected_is_stopped(
    server: LocalBackendServer, client: BackendClient, make_file, tmp_path: Path
) -> None:
    collection_id = register_dataset(server.data_dir, "d", [make_file(size=50_000)])
    url = client.get_data_collection(collection_id)["file_specifications"][0]["url"]
    with pytest.raises(ChecksumMismatchError, match="larger than its expected size"):
        client.download(url, tmp_path / "out", size=1000)
    assert not any((tmp_path / "out").glob("*"))


# -- deadlines and bodies -------------------------------------------------------------------


def test_slow_drip_body_times_out(server: LocalBackendServer) -> None:
    job = BackendClient(server.spec).create_job({"action": "a"})
    spec = server.spec.model_copy(update={"read_timeout": 1.0, "total_timeout": 1.0, "max_retries": 0})
    server.faults.add("drip", seconds=0.2, count=1, method="GET")  # ~150 bytes: 30 s in all
    started = time.monotonic()
    with BackendClient(spec) as client, pytest.raises(BackendTimeoutError, match="still arriving"):
        client.get_job(job["id"])
    assert time.monotonic() - started < 2.5


def test_non_json_success_is_a_backend_error(server: LocalBackendServer, client: BackendClient) -> None:
    server.faults.add("status", status=200, body="<html>proxy login</html>", content_type="text/html")
    with pytest.raises(BackendError, match="Expected a JSON answer") as info:
        client.get_job(1)
    assert info.value.status == 200 and "text/html" in str(info.value)


def test_nan_in_a_body_is_refused_before_sending(server: LocalBackendServer, client: BackendClient) -> None:
    job = client.create_job({"action": "a"})
    with pytest.raises(BackendValidationError, match="NaN or Infinity"):
        client.update_job(job["id"], metrics_record={"loss": float("nan")})
    assert ("PATCH", f"/jobs/{job['id']}/") not in server.faults.requests


# -- checks before the first byte ------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"name": "   "}, {"name": "m", "configuration": [1]}])
def test_fields_the_server_refuses_are_refused_before_upload(
    server: LocalBackendServer, client: BackendClient, make_file, fields: dict
) -> None:
    with pytest.raises(BackendValidationError):
        client.create_model(fields, file=make_file(size=1000))
    assert server.faults.requests == []


def test_overlong_upload_name_is_refused_before_upload(
    server: LocalBackendServer, client: BackendClient, make_file
) -> None:
    folder = make_file(name="d" * 253 + "/w.bin", size=10).parent  # uploads as "ddd...d.zip": 257 bytes
    with pytest.raises(LocalPathError, match="at most 255 bytes"):
        client.create_model({"name": "m"}, file=folder)
    assert server.faults.requests == []


# -- proxies -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1"])
def test_every_loopback_spelling_bypasses_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    listen = "127.0.0.2" if host == "127.0.0.2" else "127.0.0.1"
    dead_proxy = f"http://127.0.0.1:{_free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with LocalBackendServer(data_dir=tmp_path / "d", host=listen) as srv:
        spec = BackendSpec(base_url=f"http://{host}:{srv.port}/", token=srv.token, max_retries=0)
        with BackendClient(spec) as client:
            assert client.create_job({"action": "a"})["status"] == "pending"
