"""No log line, rendered or structured, ever carries the token."""

from __future__ import annotations

import pytest
import structlog

from synapse_ray.backend import AuthenticationError, BackendClient, BackendSpec
from synapse_ray.localbackend import LocalBackendServer

WRONG = "wrong-token-value-123456"


def _exercise(server: LocalBackendServer, spec: BackendSpec, make_file) -> None:
    server.faults.add("status", status=503, count=1, path_prefix="jobs/")
    server.faults.add("drop", method="PUT", path_prefix="chunked_upload/", skip=1, count=1)
    with BackendClient(spec) as client:
        job = client.create_job({"action": "a"})
        client.update_job(job["id"], status="running")
        client.create_logs([{"job": job["id"], "message": "m"}])
        model = client.create_model({"name": "m"}, file=make_file(size=600_000))
        client.download_model(model["id"], make_file().parent / "dl")
    bad = spec.model_copy(update={"token": WRONG})
    with BackendClient(bad) as client, pytest.raises(AuthenticationError):
        client.get_job(1)


def test_structured_events_never_contain_the_token(server: LocalBackendServer, spec, make_file) -> None:
    with structlog.testing.capture_logs() as events:
        _exercise(server, spec, make_file)
    names = {e["event"] for e in events}
    assert "backend.retry" in names and "backend.upload.resume" in names
    token = server.token
    for event in events:
        text = repr(event)
        assert token not in text and WRONG not in text
        assert "Synapse-Access-Token" not in text


def test_rendered_output_never_contains_the_token(
    server: LocalBackendServer, spec, make_file, capsys: pytest.CaptureFixture[str]
) -> None:
    _exercise(server, spec, make_file)
    out = capsys.readouterr()
    for text in (out.out, out.err):
        assert server.token not in text and WRONG not in text
