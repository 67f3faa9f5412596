"""get_client: one client per process per spec; clients never travel as live objects."""

from __future__ import annotations

import multiprocessing
import pickle

import httpx
import pytest
from ray import cloudpickle

from synapse_ray.backend import BackendClient, BackendSpec, get_client
from synapse_ray.backend.client import close_clients
from synapse_ray.localbackend import LocalBackendServer


@pytest.fixture(autouse=True)
def _fresh_cache():
    close_clients()
    yield
    close_clients()


def test_one_client_per_spec() -> None:
    a = BackendSpec(base_url="http://127.0.0.1:9/", token="t")
    b = BackendSpec(base_url="http://127.0.0.1:9/", token="t")
    c = BackendSpec(base_url="http://127.0.0.1:9/", token="u")
    assert get_client(a) is get_client(b)
    assert get_client(a) is not get_client(c)


def test_pickled_client_becomes_the_cached_client_for_its_spec() -> None:
    spec = BackendSpec(base_url="http://127.0.0.1:9/", token="tok")
    client = get_client(spec)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(client))  # the spec travels, the pool does not
        assert again is client
        assert again.spec == spec


def test_client_with_custom_transport_refuses_pickling() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    with BackendClient(BackendSpec(base_url="http://127.0.0.1:9/"), transport=transport) as client:
        with pytest.raises(TypeError, match="get_client"):
            pickle.dumps(client)


def test_repr_does_not_show_the_token() -> None:
    client = get_client(BackendSpec(base_url="http://127.0.0.1:9/", token="hidden-123"))
    assert "hidden-123" not in repr(client)


def test_forked_child_builds_its_own_client(server: LocalBackendServer) -> None:
    spec = server.spec
    parent = get_client(spec)
    job = parent.create_job({"action": "fork"})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        client = get_client(spec)
        queue.put((client is parent, client.get_job(job["id"])["id"]))

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(timeout=20)
    assert proc.exitcode == 0
    same_object, job_id = queue.get(timeout=5)
    assert same_object is False and job_id == job["id"]
    assert parent.get_job(job["id"])["id"] == job["id"]  # the parent's pool still works
