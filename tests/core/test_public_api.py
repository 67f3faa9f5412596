"""The public names resolve (they load lazily) and stay the documented ones."""

from __future__ import annotations

import subprocess
import sys

import synapse_ray


def test_every_public_name_resolves():
    missing = [name for name in synapse_ray.__all__ if getattr(synapse_ray, name, None) is None]
    assert missing == []
    for name in (
        "BaseTrainAction",
        "TrainProgressCategories",
        "StepRegistry",
        "BaseStep",
        "StepResult",
        "TrainContext",
        "RuntimeContext",
        "BackendSpec",
        "BackendClient",
        "LocalExecutor",
        "RayExecutor",
        "RunStatus",
        "ProgressSnapshot",
        "RetryPolicy",
    ):
        assert name in synapse_ray.__all__


def test_importing_the_package_loads_neither_ray_nor_the_server():
    code = (
        "import sys, synapse_ray; print(sorted(m for m in ('ray', 'aiohttp', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
