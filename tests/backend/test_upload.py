"""Chunked upload: streaming memory, resume after drops, server-side integrity."""

from __future__ import annotations

import hashlib
import socket
import tracemalloc
from pathlib import Path

import pytest

from synapse_ray.backend import BackendClient, BackendConnectionError, BackendSpec, BackendValidationError
from synapse_ray.localbackend import LocalBackendServer

MiB = 1024 * 1024


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_50mb_upload_memory_is_bounded(server: LocalBackendServer, make_file) -> None:
    path = make_file("big.bin", size=50 * MiB)
    spec = server.spec.model_copy(update={"chunk_size": 8 * MiB})
    with BackendClient(spec) as client:
        client.get_model  # noqa: B018 - warm imports before measuring
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            model = client.create_model({"name": "big"}, file=path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    growth = peak - baseline
    # The client streams 1 MiB blocks and the server writes 1 MiB blocks: far
    # below the bound of three 8 MiB chunks (both run in this process).
    assert growth < 3 * spec.chunk_size, f"peak growth {growth / MiB:.1f} MiB"
    assert model["file_size"] == 50 * MiB
    assert model["checksum"] == _md5(path)
    stored = server.data_dir / "files" / model["file"].split("/files/", 1)[1]
    assert _md5(stored) == model["checksum"]
    assert not list((server.data_dir / "uploads").iterdir())


def _put_paths(server: LocalBackendServer) -> list[str]:
    return [p for m, p in server.faults.requests if m == "PUT"]


def test_resume_after_connection_dropped_after_commit(
    client: BackendClient, server: LocalBackendServer, make_file
) -> None:
    path = make_file(size=5 * 256 * 1024)  # 5 chunks
    server.faults.add("drop", method="PUT", path_prefix="chunked_upload/", skip=2, count=1)
    model = client.create_model({"name": "resumed"}, file=path)
    assert model["checksum"] == _md5(path)
    # The third chunk was stored but its answer was cut: the client asked for
    # the offset and went on with the fourth, so exactly 5 PUTs.
    puts = _put_paths(server)
    assert len(puts) == 5
    upload_id = puts[1].split("/")[2]
    assert ("GET", f"/chunked_upload/{upload_id}/") in server.faults.requests
    assert server.store.count("chunked_uploads") == 1


def test_resume_after_connection_dropped_before_the_chunk(
    client: BackendClient, server: LocalBackendServer, make_file
) -> None:
    path = make_file(size=4 * 256 * 1024 + 17)
    server.faults.add("drop", method="PUT", path_prefix="chunked_upload/", skip=1, count=2, after=False)
    model = client.create_model({"name": "resumed"}, file=path)
    assert model["checksum"] == _md5(path) and model["file_size"] == path.stat().st_size
    assert len(_put_paths(server)) == 5 + 2  # the dropped chunk was sent three times


def test_first_chunk_retry_does_not_open_a_second_upload(
    client: BackendClient, server: LocalBackendServer, make_file
) -> None:
    path = make_file(size=3 * 256 * 1024)
    server.faults.add("drop", method="PUT", path_prefix="chunked_upload/", count=1)
    model = client.create_model({"name": "first"}, file=path)
    assert model["checksum"] == _md5(path)
    assert server.store.count("chunked_uploads") == 1


def test_upload_gives_up_after_the_retry_budget(server: LocalBackendServer, make_file) -> None:
    spec = server.spec.model_copy(update={"backoff": 0.01, "max_retries": 2, "chunk_size": 1024})
    server.faults.add("drop", method="PUT", count=10, after=False)
    with BackendClient(spec) as client, pytest.raises(BackendConnectionError):
        client.create_model({"name": "never"}, file=make_file(size=4096))
    assert server.store.count("models") == 0


def _raw_request(server: LocalBackendServer, head: str, body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # whatever the server answers (or nothing)


def test_server_discards_a_chunk_whose_body_was_cut(
    client: BackendClient, server: LocalBackendServer, spec: BackendSpec
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    first = client.request(
        "PUT",
        "chunked_upload/",
        params={"filename": "x.bin"},
        content=data[:1000],
        headers={"Content-Range": f"bytes 0-999/{len(data)}"},
    ).json()
    assert first["offset"] == 1000
    token = spec.headers()["Synapse-Access-Token"]
    head = (
        f"PUT /chunked_upload/{first['id']}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Synapse-Access-Token: {token}\r\nContent-Range: bytes 1000-{len(data) - 1}/{len(data)}\r\n"
        f"Content-Length: {len(data) - 1000}\r\n"
    )
    _raw_request(server, head, data[1000:5000])  # then the connection closes
    state = client.request("GET", f"chunked_upload/{first['id']}/").json()
    assert state["offset"] == 1000  # the partial chunk does not count
    assert (server.data_dir / "uploads" / f"{first['id']}.part").stat().st_size == 1000
    # The client can go on from there and the md5 still matches.
    rest = client.request(
        "PUT",
        first["url"],
        content=data[1000:],
        headers={"Content-Range": f"bytes 1000-{len(data) - 1}/{len(data)}"},
    ).json()
    assert rest["offset"] == len(data)
    done = client.request(
        "POST", f"chunked_upload/{first['id']}/complete/", json={"md5": hashlib.md5(data).hexdigest()}
    ).json()
    assert done["status"] == "complete" and done["md5"] == hashlib.md5(data).hexdigest()


def test_server_rejects_wrong_md5_and_out_of_order_chunks(client: BackendClient) -> None:
    first = client.request(
        "PUT",
        "chunked_upload/",
        params={"filename": "y.bin"},
        content=b"a" * 10,
        headers={"Content-Range": "bytes 0-9/20"},
    ).json()
    conflict = client.request(
        "PUT",
        first["url"],
        content=b"b" * 5,
        headers={"Content-Range": "bytes 15-19/20"},
        allow_status=(409,),
    )
    assert conflict.status_code == 409 and conflict.json()["offset"] == 10
    replay = client.request(
        "PUT", first["url"], content=b"a" * 5, headers={"Content-Range": "bytes 0-4/20"}
    ).json()
    assert replay["offset"] == 10  # an already stored chunk is acknowledged, not re-applied
    with pytest.raises(BackendValidationError, match="incomplete"):
        client.request("POST", f"chunked_upload/{first['id']}/complete/", json={"md5": "0" * 32})
    client.request("PUT", first["url"], content=b"b" * 10, headers={"Content-Range": "bytes 10-19/20"})
    with pytest.raises(BackendValidationError) as info:
        client.request("POST", f"chunked_upload/{first['id']}/complete/", json={"md5": "0" * 32})
    assert "md5" in info.value.errors


def test_first_chunk_cut_off_mid_body_can_be_retried_with_the_same_key(server):
    """The server's 400 for a cut-off body must not be replayed for the retry."""
    import socket
    import time

    import httpx

    body = b"x" * 4096
    key = "first-chunk-key-1"
    head = (
        f"PUT /chunked_upload/?filename=m.bin HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Synapse-Access-Token: Token {server.token}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Range: bytes 0-4095/4096\r\nContent-Length: 4096\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[:1000])  # the connection drops mid-body
    headers = {
        "Synapse-Access-Token": f"Token {server.token}",
        "Idempotency-Key": key,
        "Content-Range": "bytes 0-4095/4096",
    }
    deadline = time.monotonic() + 10
    while True:  # the server may still be finishing the cut-off request
        retry = httpx.put(
            f"{server.url}chunked_upload/",
            params={"filename": "m.bin"},
            content=body,
            headers=headers,
            timeout=10,
        )
        if retry.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert retry.status_code == 200, retry.text
    assert retry.json()["offset"] == 4096
    assert retry.headers.get("Idempotent-Replayed") is None
