"""Hostile or malformed input to the local backend: a clear 4xx, nothing half-written, no secret logged."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import structlog

from synapse_ray.backend import BackendClient, BackendValidationError
from synapse_ray.localbackend import LocalBackendServer, register_dataset
from synapse_ray.localbackend.common import Limits

from .rawhttp import raw_request


def _auth(server: LocalBackendServer) -> bytes:
    return f"Synapse-Access-Token: Token {server.token}".encode()


def test_non_utf8_token_header_is_401_and_the_token_is_never_logged(server: LocalBackendServer) -> None:
    head = b"GET /jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _auth(server) + b"\xff"
    with structlog.testing.capture_logs() as events:
        status, answer = raw_request(server.port, head)
    assert status == 401 and b"Invalid token" in answer
    assert all(server.token not in repr(event) for event in events)


def test_a_handler_error_logs_no_request_text(
    server: LocalBackendServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError(f"leaked {server.token}")

    monkeypatch.setattr(server.store, "list_jobs", boom)
    with structlog.testing.capture_logs() as events, BackendClient(server.spec) as client:
        with pytest.raises(Exception, match="500"):
            client.request("GET", "jobs/")
    errors = [e for e in events if e["event"] == "backend.server.error"]
    assert errors and errors[0]["error"] == "RuntimeError"
    assert all(server.token not in repr(event) for event in events)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/jobs/", b"[" * 100_000 + b"]" * 100_000, 400),  # nesting past the recursion limit
        ("POST", "/jobs/", b'{"loss": NaN}', 400),
        ("POST", "/jobs/", b'{"loss": Infinity}', 400),
        ("POST", "/jobs/", b'{"a": "\xff"}', 400),
        ("GET", f"/jobs/{2**63}/", b"", 404),
        ("GET", f"/models/{10**30}/", b"", 404),
        ("PATCH", f"/jobs/{2**64}/", b"{}", 404),
        ("GET", "/data_collections/99999999999999999999/", b"", 404),
        ("GET", "/files/a%00b", b"", 400),
        ("GET", "/files/" + "x" * 300, b"", 404),
        ("POST", "/jobs/", b'{"status": null}', 400),
    ],
)
def test_malformed_input_is_a_clear_4xx(
    server: LocalBackendServer, method: str, path: str, body: bytes, status: int
) -> None:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode() + _auth(server)
    got, answer = raw_request(server.port, head, body)
    assert got == status, answer[:300]
    assert b'"detail"' in answer or b'"status"' in answer
    assert server.store.count("jobs") == 0


@pytest.mark.parametrize(("total", "status"), [("9" * 5000, 400), (str(2**63 + 1), 413), (str(2**64), 400)])
def test_absurd_declared_totals_are_refused_and_write_nothing(
    server: LocalBackendServer, total: str, status: int
) -> None:
    head = (
        f"PUT /chunked_upload/?filename=a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Range: bytes 0-0/{total}\r\nContent-Length: 1\r\n"
    ).encode() + _auth(server)
    got, answer = raw_request(server.port, head, b"x")
    assert got == status, answer[:300]
    assert list((server.data_dir / "uploads").iterdir()) == []
    assert server.store.count("chunked_uploads") == 0


@pytest.mark.parametrize("host", [b"[::1", b"a b", b"\xff\xfe", b"evil.example:1"])
def test_host_header_is_never_reflected(server: LocalBackendServer, host: bytes, make_file) -> None:
    register_dataset(server.data_dir, "d", [make_file(size=10)])
    head = b"GET /data_collections/1/ HTTP/1.1\r\nHost: " + host + b"\r\n" + _auth(server)
    status, answer = raw_request(server.port, head)
    assert status == 200, answer[:300]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["file_specifications"][0]["url"].startswith(f"{server.url}files/")


def test_job_status_cannot_be_set_to_null(client: BackendClient) -> None:
    job = client.create_job({"action": "a"})
    with pytest.raises(BackendValidationError) as info:
        client.request("PATCH", f"jobs/{job['id']}/", json={"status": None})
    assert "status" in info.value.errors
    with pytest.raises(BackendValidationError):
        client.request("POST", "jobs/", json={"status": None})
    assert client.get_job(job["id"])["status"] == "pending"


def test_file_names_needing_percent_encoding_download_intact(
    server: LocalBackendServer, client: BackendClient, tmp_path: Path
) -> None:
    src = tmp_path / "odd"
    src.mkdir()
    names = ["a#b.bin", "q?x=1.bin", "%41.bin", "A.bin", "cr\r\nlf.bin", "sp ace.bin"]
    for index, name in enumerate(names):
        (src / name).write_bytes(f"content {index}".encode())
    collection_id = register_dataset(server.data_dir, "odd", [src])
    paths = client.download_data_collection(collection_id, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in paths} == {
        name: f"content {index}".encode() for index, name in enumerate(names)
    }


# -- limits ---------------------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path):
    limits = Limits(
        max_chunk_bytes=1000,
        max_upload_bytes=10_000,
        max_open_uploads=2,
        max_json_bytes=2000,
        body_read_timeout=0.5,
        idle_timeout=0.5,
        page_size=2,
    )
    with LocalBackendServer(data_dir=tmp_path / "lim", limits=limits) as srv:
        yield srv


def _first_chunk(client: BackendClient, size: int, total: int, name: str = "a.bin") -> object:
    return client.request(
        "PUT",
        "chunked_upload/",
        params={"filename": name},
        content=b"x" * size,
        headers={"Content-Range": f"bytes 0-{size - 1}/{total}"},
        allow_status=(400, 413, 507),
    )


def test_upload_limits_are_refused_before_anything_is_stored(limited: LocalBackendServer) -> None:
    with BackendClient(limited.spec.model_copy(update={"max_retries": 0})) as client:
        assert _first_chunk(client, 1001, 5000).status_code == 413  # chunk too big
        assert _first_chunk(client, 10, 10_001).status_code == 413  # declared total too big
        assert _first_chunk(client, 10, 100, name="n" * 300).status_code == 400  # name too long
        assert list((limited.data_dir / "uploads").iterdir()) == []
        assert _first_chunk(client, 10, 100).status_code == 200
        assert _first_chunk(client, 10, 100).status_code == 200
        third = _first_chunk(client, 10, 100)  # two unfinished uploads already
        assert third.status_code == 400 and "Too many unfinished uploads" in third.json()["detail"]


def test_declared_size_beyond_free_disk_is_507(server: LocalBackendServer, client: BackendClient) -> None:
    import shutil

    huge = shutil.disk_usage(server.data_dir).free + 2**30
    response = _first_chunk(client, 10, huge)
    assert response.status_code == 507 and "free disk" in response.json()["detail"]
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_json_body_over_the_limit_is_413(limited: LocalBackendServer) -> None:
    with BackendClient(limited.spec.model_copy(update={"max_retries": 0})) as client:
        response = client.request("POST", "jobs/", json={"blob": "x" * 5000}, allow_status=(413,))
    assert response.status_code == 413 and limited.store.count("jobs") == 0


def test_over_long_chunk_body_is_refused(server: LocalBackendServer) -> None:
    head = (
        b"PUT /chunked_upload/?filename=a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Range: bytes 0-9/100\r\nTransfer-Encoding: chunked\r\n" + _auth(server)
    )
    body = b"14\r\n" + b"y" * 20 + b"\r\n0\r\n\r\n"  # 20 bytes for a 10-byte range
    status, answer = raw_request(server.port, head, body)
    assert status == 400 and b"longer than" in answer
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_stalled_chunk_body_times_out(limited: LocalBackendServer) -> None:
    head = (
        b"PUT /chunked_upload/?filename=a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Range: bytes 0-99/100\r\nContent-Length: 100\r\n"
        + f"Synapse-Access-Token: Token {limited.token}".encode()
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(head + b"\r\n\r\n" + b"z" * 10)  # then nothing more
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"stalled" in answer
    assert time.monotonic() - started < 3


def test_idle_connection_is_closed(limited: LocalBackendServer) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        assert sock.recv(1) == b""  # the server hung up on a connection that sent nothing
    assert time.monotonic() - started < 4


def test_lists_are_paginated_and_the_client_follows_next(limited: LocalBackendServer, make_file) -> None:
    with BackendClient(limited.spec) as client:
        for index in range(5):
            client.create_job({"action": f"a{index}"})
        first = client.request("GET", "jobs/").json()
        assert first["count"] == 5 and len(first["results"]) == 2 and first["previous"] is None
        assert first["next"].startswith(limited.url) and "page=2" in first["next"]
        last = client.request("GET", "jobs/", params={"page": 3}).json()
        assert [j["action"] for j in last["results"]] == ["a4"] and last["next"] is None
        for index in range(3):
            client.create_model({"name": f"m{index}"}, file=make_file(size=100))
        assert [m["name"] for m in client.list_models()] == ["m0", "m1", "m2"]
        assert [m["name"] for m in client.list_models(name="m1")] == ["m1"]
        bad = client.request("GET", "jobs/", params={"page_size": 0}, allow_status=(400,))
        assert bad.status_code == 400


def test_headers_sent_a_byte_at_a_time_are_cut_off(limited: LocalBackendServer) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=0.05) as sock:
        sock.sendall(b"GET /jobs/ HTTP/1.1\r\nX-Slow: ")
        closed = False
        while not closed and time.monotonic() - started < 4:
            try:
                sock.sendall(b"a")
                closed = sock.recv(100) == b""
            except TimeoutError:
                time.sleep(0.1)
            except OSError:
                closed = True
    assert closed and time.monotonic() - started < 3


def test_a_json_body_that_never_arrives_is_408(limited: LocalBackendServer) -> None:
    head = (
        b"POST /jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nIdempotency-Key: k\r\n"
        + f"Synapse-Access-Token: Token {limited.token}".encode()
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(head + b"\r\n\r\n" + b'{"a": ')  # then nothing more
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3 and limited.store.count("jobs") == 0
