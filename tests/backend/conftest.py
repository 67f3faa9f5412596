"""Fixtures: a real local backend on 127.0.0.1 (test mode) per test, and clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from synapse_ray.backend import BackendClient, BackendSpec
from synapse_ray.localbackend import LocalBackendServer


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "backend-data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[LocalBackendServer]:
    """A fresh server (own data dir, free port, fault injection on)."""
    srv = LocalBackendServer(data_dir=data_dir, test_mode=True).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def spec(server: LocalBackendServer) -> BackendSpec:
    """The server's spec with short backoff and small chunks so tests stay fast."""
    return server.spec.model_copy(update={"backoff": 0.01, "chunk_size": 256 * 1024, "read_timeout": 10.0})


@pytest.fixture
def client(spec: BackendSpec) -> Iterator[BackendClient]:
    with BackendClient(spec) as c:
        yield c


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a file of ``size`` random bytes (or ``data``) under tmp_path."""

    def make(name: str = "blob.bin", size: int = 1024, data: bytes | None = None) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        else:
            with path.open("wb") as fh:
                remaining = size
                while remaining:
                    block = os.urandom(min(remaining, 1 << 20))
                    fh.write(block)
                    remaining -= len(block)
        return path

    return make
