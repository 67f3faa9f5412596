"""Token handling: generated once with mode 0600, required on every endpoint."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from synapse_ray.backend import AuthenticationError, BackendClient, BackendSpec
from synapse_ray.localbackend import LocalBackendServer, load_or_create_token, register_dataset

WRONG = "definitely-not-the-token-xyz"


def test_token_file_is_private_and_reused(server: LocalBackendServer, data_dir: Path) -> None:
    path = data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == server.token
    assert load_or_create_token(data_dir) == server.token
    server.stop()
    with LocalBackendServer(data_dir=data_dir) as again:
        assert again.token == server.token


def test_wrong_token_is_authentication_error_without_token_text(server: LocalBackendServer) -> None:
    spec = BackendSpec(base_url=server.url, token=WRONG, max_retries=0)
    with BackendClient(spec) as client, pytest.raises(AuthenticationError) as info:
        client.get_job(1)
    err = info.value
    assert err.status == 401
    assert "SYNAPSE_ACCESS_TOKEN" in str(err)
    assert WRONG not in str(err) and WRONG not in repr(err)
    assert server.token not in str(err)
    assert "Invalid token" in str(err)


def test_missing_token(server: LocalBackendServer) -> None:
    with (
        BackendClient(BackendSpec(base_url=server.url)) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.create_job({"action": "x"})
    assert "not provided" in str(info.value) and "SYNAPSE_ACCESS_TOKEN" in str(info.value)
    assert server.store.count("jobs") == 0


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "data_collections/1/"),
        ("GET", "files/data_collections/1/a.txt"),
        ("PUT", "chunked_upload/"),
        ("POST", "models/"),
        ("GET", "models/1/"),
        ("POST", "jobs/"),
        ("PATCH", "jobs/1/"),
        ("POST", "logs/"),
        ("POST", "_test/faults"),
    ],
)
def test_every_endpoint_requires_the_token(
    server: LocalBackendServer, tmp_path: Path, method: str, path: str
) -> None:
    (tmp_path / "a.txt").write_text("a")
    register_dataset(server.data_dir, "d", [tmp_path / "a.txt"])
    with httpx.Client(base_url=server.url, trust_env=False) as raw:
        for headers in ({}, {"Synapse-Access-Token": f"Token {WRONG}"}):
            response = raw.request(method, path, headers=headers)
            assert response.status_code == 401
            assert "detail" in response.json()
        ok = raw.get(
            "files/data_collections/1/a.txt", headers={"Synapse-Access-Token": f"Token {server.token}"}
        )
        assert ok.status_code == 200 and ok.text == "a"


def test_fault_endpoint_exists_only_in_test_mode(tmp_path: Path) -> None:
    with LocalBackendServer(data_dir=tmp_path / "d") as plain, BackendClient(plain.spec) as client:
        response = client.request("POST", "_test/faults", json={"kind": "status"}, allow_status=(404, 405))
        assert response.status_code in (404, 405)
