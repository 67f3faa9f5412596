"""One backoff for requests, upload resume and download resume; a cancel cuts its wait."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from synapse_ray.backend import BackendClient, ServerError
from synapse_ray.backend.retrying import MAX_BACKOFF, backoff_delay, cancel_scope, current_waiter
from synapse_ray.errors import RunCancelledError
from synapse_ray.localbackend import LocalBackendServer, register_dataset
from synapse_ray.runtime.cancel import CancelToken


def _cancel_later(token: CancelToken, after: float) -> threading.Timer:
    timer = threading.Timer(after, token.cancel, args=("test cancel",))
    timer.start()
    return timer


def test_cancel_interrupts_a_request_backoff_within_a_second(server: LocalBackendServer) -> None:
    # Backoff 60 s: without the cancel hook the first wait alone lasts 48-72 s.
    spec = server.spec.model_copy(update={"backoff": 60.0, "max_retries": 3})
    server.faults.add("status", status=503, count=10, path_prefix="jobs/")
    token = CancelToken()
    started = time.monotonic()
    timer = _cancel_later(token, 0.3)
    with BackendClient(spec) as client, cancel_scope(token), pytest.raises(RunCancelledError) as info:
        client.get_job(1)
    timer.join()
    assert time.monotonic() - started < 2.0
    assert "GET jobs/1/" in str(info.value)
    assert isinstance(info.value.__cause__, ServerError) and info.value.__cause__.status == 503
    assert current_waiter() is None  # the scope is gone once the block ends
    restored = pickle.loads(pickle.dumps(info.value))  # Ray ships it: type, text and cause survive
    assert isinstance(restored, RunCancelledError) and isinstance(restored.__cause__, ServerError)
    assert server.token.encode() not in pickle.dumps(info.value)


def test_cancel_from_another_thread_reaches_the_worker_thread_scope(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"backoff": 60.0})
    server.faults.add("status", status=429, retry_after=100, count=10)
    token = CancelToken()
    outcome: list[BaseException] = []

    def worker() -> None:
        with BackendClient(spec) as client, cancel_scope(token):
            try:
                client.create_job({"action": "a"})
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

    thread = threading.Thread(target=worker)
    started = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 5
    while len(server.faults.requests) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    token.cancel()
    thread.join(timeout=5)
    assert time.monotonic() - started < 2.0
    assert len(outcome) == 1 and isinstance(outcome[0], RunCancelledError)
    assert "POST jobs/" in str(outcome[0])


def test_cancel_interrupts_an_upload_resume_wait(server: LocalBackendServer, make_file) -> None:
    spec = server.spec.model_copy(update={"backoff": 60.0, "chunk_size": 256 * 1024})
    server.faults.add("status", status=503, method="PUT", path_prefix="chunked_upload/", skip=1, count=10)
    token = CancelToken()
    started = time.monotonic()
    timer = _cancel_later(token, 0.3)
    with BackendClient(spec) as client, cancel_scope(token), pytest.raises(RunCancelledError) as info:
        client.create_model({"name": "m"}, file=make_file(size=600_000))
    timer.join()
    assert time.monotonic() - started < 2.0
    assert "upload" in str(info.value) and isinstance(info.value.__cause__, ServerError)


def test_cancel_interrupts_a_download_resume_wait(
    server: LocalBackendServer, make_file, tmp_path: Path
) -> None:
    collection_id = register_dataset(server.data_dir, "d", [make_file(size=300_000)])
    spec = server.spec.model_copy(update={"backoff": 60.0})
    with BackendClient(spec) as client:
        collection = client.get_data_collection(collection_id)
        server.faults.add("drop", method="GET", path_prefix="files/", count=10)
        token = CancelToken()
        started = time.monotonic()
        timer = _cancel_later(token, 0.3)
        with cancel_scope(token), pytest.raises(RunCancelledError) as info:
            client.download_data_collection(collection, tmp_path / "out")
        timer.join()
    assert time.monotonic() - started < 2.0
    assert "download" in str(info.value)
    assert not any((tmp_path / "out").glob("*"))


def test_without_a_scope_backoff_still_sleeps(server: LocalBackendServer) -> None:
    spec = server.spec.model_copy(update={"backoff": 0.2, "max_retries": 1})
    job = BackendClient(server.spec).create_job({"action": "a"})
    server.faults.add("status", status=503, count=1, path_prefix="jobs/", method="GET")
    started = time.monotonic()
    with BackendClient(spec) as client:
        assert client.get_job(job["id"])["id"] == job["id"]
    assert time.monotonic() - started >= 0.15  # 0.2 s +-20 % jitter


def test_backoff_cap_is_the_real_maximum() -> None:
    delays = [backoff_delay(0.5, attempt) for attempt in range(60) for _ in range(20)]
    assert max(delays) == MAX_BACKOFF == 30.0
    assert all(d <= MAX_BACKOFF for d in delays)


def test_total_timeout_bounds_a_call_that_keeps_being_rate_limited(server: LocalBackendServer) -> None:
    # Retry-After 120 with 3 retries used to take 360 s.
    spec = server.spec.model_copy(update={"total_timeout": 1.0})
    server.faults.add("status", status=429, retry_after=120, count=10)
    started = time.monotonic()
    with BackendClient(spec) as client, pytest.raises(Exception) as info:
        client.get_job(1)
    assert time.monotonic() - started < 1.5
    assert "deadline" in str(info.value) and info.value.status == 429
