"""Fixtures: a real embedded backend on 127.0.0.1 with a small dataset and a checkpoint model.

The Ray tests share the session Ray instance of ``tests/ray`` (same fixture).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ray.conftest import ray_session, wait_until  # noqa: F401 - shared session fixture

DATA_FILES = {"images/a.txt": b"alpha", "images/b.txt": b"beta", "dataset.yaml": b"names: [a, b]\n"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running local backend, a registered dataset and a checkpoint model (category ``base``)."""
    from synapse_ray.backend import BackendClient, LocalBackendServer, register_dataset

    root = tmp_path_factory.mktemp("compat-backend")
    src = root / "src"
    for name, content in DATA_FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    data_dir = root / "data"
    dataset_id = register_dataset(data_dir, "compat", [src / "images"])
    yolo_id = register_dataset(data_dir, "compat-yolo", [src])
    server = LocalBackendServer(data_dir=data_dir).start()
    archive = root / "start.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("start.json", json.dumps({"epoch": 7}))
    with BackendClient(server.spec) as client:
        checkpoint = client.create_model(
            {"name": "yolo-base", "category": "base", "task": "detect"}, file=archive
        )
    try:
        yield {
            "server": server,
            "spec": server.spec,
            "dataset_id": dataset_id,
            "yolo_dataset_id": yolo_id,
            "checkpoint_id": checkpoint["id"],
        }
    finally:
        server.stop()


def new_job(spec: Any) -> int:
    from synapse_ray.backend import BackendClient

    with BackendClient(spec) as client:
        return int(client.create_job({"action": "compat"})["id"])


def job_logs(spec: Any, job_id: int) -> list[dict[str, Any]]:
    from synapse_ray.backend import BackendClient

    with BackendClient(spec) as client:
        return client.request("GET", "logs/", params={"job": str(job_id)}).json()["results"]


def job_record(spec: Any, job_id: int) -> dict[str, Any]:
    from synapse_ray.backend import BackendClient

    with BackendClient(spec) as client:
        return dict(client.get_job(job_id))
