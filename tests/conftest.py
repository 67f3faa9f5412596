"""Session-wide settings (every Ray process on loopback, no usage stats) and shared fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.pop("SYNAPSE_HOST", None)
# The embedded backend a CLI test starts must never write to the user's ~/.synapse_ray.
os.environ["SYNAPSE_RAY_HOME"] = tempfile.mkdtemp(prefix="synapse-ray-home-")
os.environ.pop("SYNAPSE_ACCESS_TOKEN", None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_backend(tmp_path_factory: pytest.TempPathFactory):
    from synapse_ray.localbackend import LocalBackendServer, register_dataset

    data_dir = tmp_path_factory.mktemp("examples-backend")
    npz = data_dir / "digits.npz"
    subprocess.run([sys.executable, str(REPO / "examples/make_digits_dataset.py"), str(npz)], check=True)
    dataset_id = register_dataset(data_dir, "digits", [npz])
    server = LocalBackendServer(data_dir=data_dir).start()
    yield server, dataset_id
    server.stop()
