"""Downloads: checksum verification, safe names, resume, same-origin auth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from synapse_ray.backend import BackendClient, BackendSpec, ChecksumMismatchError, UnsafePathError
from synapse_ray.localbackend import LocalBackendServer, register_dataset


@pytest.fixture
def stored(server: LocalBackendServer, make_file) -> dict:
    path = make_file("data.bin", size=300_000)
    collection_id = register_dataset(server.data_dir, "d", [path])
    return {"path": path, "id": collection_id}


def _file_spec(client: BackendClient, collection_id: int) -> dict:
    return client.get_data_collection(collection_id)["file_specifications"][0]


def test_checksum_mismatch_leaves_no_file(client: BackendClient, stored: dict, tmp_path: Path) -> None:
    spec = _file_spec(client, stored["id"])
    dest = tmp_path / "dl"
    with pytest.raises(ChecksumMismatchError) as info:
        client.download(spec["url"], dest, name="data.bin", checksum="0" * 32)
    err = info.value
    assert err.expected == "0" * 32 and err.actual == spec["checksum"] and err.url == spec["url"]
    assert list(dest.iterdir()) == []


def test_download_with_checksum_and_default_name(client: BackendClient, stored: dict, tmp_path: Path) -> None:
    spec = _file_spec(client, stored["id"])
    path = client.download(spec["url"], tmp_path / "dl", checksum=spec["checksum"])
    assert path.name == "data.bin"
    assert path.read_bytes() == stored["path"].read_bytes()


def test_relative_url_is_resolved_against_base_url(
    client: BackendClient, stored: dict, tmp_path: Path
) -> None:
    path = client.download(f"files/data_collections/{stored['id']}/data.bin", tmp_path / "dl")
    assert path.read_bytes() == stored["path"].read_bytes()


def test_resume_with_range_after_drop(
    client: BackendClient, server: LocalBackendServer, stored: dict, tmp_path: Path
) -> None:
    spec = _file_spec(client, stored["id"])
    server.faults.add("drop", path_prefix="files/", count=1)
    path = client.download(spec["url"], tmp_path / "dl", checksum=spec["checksum"])
    assert hashlib.md5(path.read_bytes()).hexdigest() == spec["checksum"]
    gets = [p for m, p in server.faults.requests if p.startswith("/files/")]
    assert len(gets) == 2


@pytest.mark.parametrize(
    "name",
    ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "..\\x", "C:\\x", "C:x", "", ".", "a\x00b"],
)
def test_unsafe_names_are_refused_before_any_request(tmp_path: Path, name: str) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=b"x")

    spec = BackendSpec(base_url="http://127.0.0.1:9/", token="t")
    with BackendClient(spec, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UnsafePathError):
            client.download("http://127.0.0.1:9/files/x", tmp_path / "dest", name=name)
    assert calls == []
    assert not (tmp_path / "x").exists()


def test_safe_sub_path_is_allowed(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"abc")

    spec = BackendSpec(base_url="http://127.0.0.1:9/")
    with BackendClient(spec, transport=httpx.MockTransport(handler)) as client:
        path = client.download("http://127.0.0.1:9/f", tmp_path / "d", name="sub/dir/f.txt")
    assert path == (tmp_path / "d" / "sub" / "dir" / "f.txt").resolve()
    assert path.read_bytes() == b"abc"


def test_token_is_sent_only_to_the_backend_origin(tmp_path: Path) -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[str(request.url)] = request.headers.get("Synapse-Access-Token")
        return httpx.Response(200, content=b"abc")

    spec = BackendSpec(base_url="http://127.0.0.1:9/api/", token="tok")
    with BackendClient(spec, transport=httpx.MockTransport(handler)) as client:
        client.download("http://127.0.0.1:9/files/a", tmp_path, name="a")
        client.download("http://127.0.0.2:9/files/b", tmp_path, name="b")
        client.download("https://127.0.0.1:9/files/c", tmp_path, name="c")
    assert seen == {
        "http://127.0.0.1:9/files/a": "Token tok",
        "http://127.0.0.2:9/files/b": None,
        "https://127.0.0.1:9/files/c": None,
    }
