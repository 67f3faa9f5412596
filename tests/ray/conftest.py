"""Ray fixtures: one shared local Ray for the session, a real local backend.

Cluster tests (``cluster`` marker) need their own multi-node cluster; they
are ordered last and shut the shared instance down first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])
# Workers inherit the environment of the cluster started by the first
# ray.init, so the test modules (tests.*) are importable there too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=True, namespace="synapse_ray")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def backend_server(tmp_path_factory: pytest.TempPathFactory):
    from synapse_ray.localbackend import LocalBackendServer

    server = LocalBackendServer(data_dir=tmp_path_factory.mktemp("backend"), test_mode=True).start()
    yield server
    server.stop()


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


def alive_actors(class_name: str) -> list[object]:
    """Alive actors of the connected cluster (named explicitly: other Ray instances may run here)."""
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return [a for a in actors if a.class_name == class_name]
