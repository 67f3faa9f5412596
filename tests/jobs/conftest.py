"""Jobs fixtures: one real ``ray start --head`` (token auth on) for the whole package.

It has its own ports, temp dir and token file; the tests reach it only through
the Jobs HTTP API (``RAY_API_SERVER_ADDRESS``), as a remote submitter would.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.head import RayHead

PROJECT = Path(__file__).resolve().parent / "project"


@pytest.fixture(scope="package")
def ray_head() -> Iterator[RayHead]:
    head = RayHead(num_cpus=4).start()
    yield head
    head.stop()


@pytest.fixture
def jobs_env(ray_head: RayHead, monkeypatch: pytest.MonkeyPatch) -> RayHead:
    """This test's process talks to the head as a submitter: address and token file."""
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", ray_head.dashboard)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head.token_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return ray_head


def raw_client(head: RayHead):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard, headers={"Authorization": f"Bearer {head.token}"})


def alive_actors_of_job(head: RayHead, ray_job_id: str) -> list[dict]:
    """ALIVE actors of one Ray job, from the dashboard's state API (HTTP, as the tests' only way in)."""
    req = urllib.request.Request(f"{head.dashboard}/api/v0/actors?limit=1000&detail=false")
    req.add_header("Authorization", f"Bearer {head.token}")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        body = json.load(resp)
    actors = body["data"]["result"]["result"]
    return [a for a in actors if a.get("job_id") == ray_job_id and a.get("state") == "ALIVE"]
