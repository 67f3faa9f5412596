"""Retries, idempotency keys, timeouts and rate limits against injected faults."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from synapse_ray.backend import (
    BackendClient,
    BackendConnectionError,
    BackendSpec,
    BackendTimeoutError,
    RateLimitError,
    ServerError,
)
from synapse_ray.localbackend import LocalBackendServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_not_running_names_url_and_serve_command() -> None:
    url = f"http://127.0.0.1:{_free_port()}/"
    spec = BackendSpec(base_url=url, token="tok", max_retries=1, backoff=0.01, connect_timeout=1)
    with BackendClient(spec) as client, pytest.raises(BackendConnectionError) as info:
        client.get_data_collection(1)
    text = str(info.value)
    assert url in text and "synapse-ray backend serve" in text
    assert info.value.url.startswith(url)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_503_n_times_then_success(client: BackendClient, server: LocalBackendServer) -> None:
    job = client.create_job({"action": "a"})
    server.faults.add("status", status=503, count=3, path_prefix="jobs/", method="GET")
    assert client.get_job(job["id"])["id"] == job["id"]
    gets = [p for m, p in server.faults.requests if m == "GET"]
    assert len(gets) == 4  # 3 answered 503, the 4th succeeded


def test_503_beyond_budget_is_server_error(client: BackendClient, server: LocalBackendServer) -> None:
    server.faults.add("status", status=503, count=10)
    with pytest.raises(ServerError) as info:
        client.get_job(1)
    assert info.value.status == 503
    assert len(server.faults.requests) == client.spec.max_retries + 1


@pytest.mark.parametrize("status", [502, 504])
def test_other_gateway_errors_are_retried(
    client: BackendClient, server: LocalBackendServer, status: int
) -> None:
    server.faults.add("status", status=status, count=2)
    assert client.create_job({"action": "a"})["status"] == "pending"


def test_500_is_not_retried(client: BackendClient, server: LocalBackendServer) -> None:
    server.faults.add("status", status=500, count=1)
    with pytest.raises(ServerError):
        client.get_job(1)
    assert len(server.faults.requests) == 1


def test_503_after_post_models_creates_exactly_one_model(
    client: BackendClient, server: LocalBackendServer, make_file
) -> None:
    # The server creates the model, then the answer is replaced by a 503 (a
    # gateway failing after the upstream committed). The retry carries the
    # same Idempotency-Key and gets the original model back.
    server.faults.add("status", status=503, count=2, path_prefix="models/", method="POST", after=True)
    model = client.create_model({"name": "once"}, file=make_file(size=2000))
    assert server.store.count("models") == 1
    assert [m["id"] for m in client.list_models()] == [model["id"]]
    posts = [p for m, p in server.faults.requests if m == "POST" and p == "/models/"]
    assert len(posts) == 3


def test_dropped_answer_to_post_jobs_creates_one_job(
    client: BackendClient, server: LocalBackendServer
) -> None:
    server.faults.add("drop", path_prefix="jobs/", method="POST", count=1)
    job = client.create_job({"action": "a"})
    assert server.store.count("jobs") == 1 and job["id"] == 1


def test_dropped_answer_to_post_logs_creates_entries_once(
    client: BackendClient, server: LocalBackendServer
) -> None:
    server.faults.add("drop", path_prefix="logs/", method="POST", count=1)
    client.create_logs([{"message": "a"}, {"message": "b"}])
    assert server.store.count("logs") == 2


def test_stall_past_read_timeout_is_timeout_error(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"read_timeout": 0.3, "max_retries": 0})
    server.faults.add("stall", seconds=2.0, count=1)
    started = time.monotonic()
    with BackendClient(spec) as client, pytest.raises(BackendTimeoutError) as info:
        client.get_job(1)
    assert time.monotonic() - started < 1.5
    assert "read_timeout=0.3s" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_stall_once_is_retried_for_idempotent_requests(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"read_timeout": 0.3, "max_retries": 1, "backoff": 0.01})
    job = BackendClient(server.spec).create_job({"action": "a"})
    server.faults.add("stall", seconds=1.0, count=1)
    with BackendClient(spec) as client:
        assert client.get_job(job["id"])["id"] == job["id"]


def test_429_retry_after_is_honoured(client: BackendClient, server: LocalBackendServer) -> None:
    server.faults.add("status", status=429, retry_after=0.4, count=1)
    started = time.monotonic()
    job = client.create_job({"action": "a"})
    elapsed = time.monotonic() - started
    assert job["status"] == "pending"
    assert elapsed >= 0.38  # the spec's backoff is 0.01 s: only Retry-After explains this


def test_429_beyond_budget_is_rate_limit_error(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"max_retries": 1})
    server.faults.add("status", status=429, retry_after=0.05, count=5)
    with BackendClient(spec) as client, pytest.raises(RateLimitError) as info:
        client.get_job(1)
    assert info.value.retry_after == pytest.approx(0.05) and info.value.status == 429


def test_faults_can_be_driven_over_http(client: BackendClient, server: LocalBackendServer) -> None:
    added = client.request(
        "POST", "_test/faults", json=[{"kind": "status", "status": 503, "count": 2, "path_prefix": "jobs/"}]
    ).json()
    assert added["faults"][0]["count"] == 2
    assert client.request("GET", "_test/faults").json()["faults"][0]["path_prefix"] == "jobs/"
    client.create_job({"action": "a"})  # retried through both 503s
    assert client.request("GET", "_test/faults").json() == {"faults": []}
    bad = client.request("POST", "_test/faults", json={"kind": "explode"}, allow_status=(400,))
    assert bad.status_code == 400


def test_mock_transport_429_then_ok() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.2"}, json={"detail": "slow"}),
            httpx.Response(200, json={"id": 5, "status": "running"}),
        ]
    )
    spec = BackendSpec(base_url="http://127.0.0.1:9/", backoff=0.0)
    with BackendClient(spec, transport=httpx.MockTransport(lambda r: next(answers))) as client:
        started = time.monotonic()
        assert client.get_job(5)["status"] == "running"
        assert time.monotonic() - started >= 0.19


def test_post_retries_reuse_one_idempotency_key() -> None:
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        if len(keys) < 3:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(201, json={"id": 1})

    spec = BackendSpec(base_url="http://127.0.0.1:9/", backoff=0.0)
    with BackendClient(spec, transport=httpx.MockTransport(handler)) as client:
        client.create_job({"a": 1})
        client.create_job({"a": 2})
    assert len(keys) == 4
    assert keys[0] and keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
