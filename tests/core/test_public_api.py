"""The public names resolve (they load lazily) and stay the documented ones."""

from __future__ import annotations

import importlib
import subprocess
import sys

import synapse_ray

# The vocabulary DESIGN.md promises users (kept by name across refactors).
DOCUMENTED = {
    "BaseTrainAction",
    "TrainProgressCategories",
    "StepRegistry",
    "BaseStep",
    "StepResult",
    "BaseStepContext",
    "TrainContext",
    "RuntimeContext",
    "BackendSpec",
    "BackendClient",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RayJobExecutor",
    "RunHandle",
    "RunStatus",
    "ProgressSnapshot",
    "RetryPolicy",
    "map_shards",
}


def test_all_lists_exactly_the_lazy_exports():
    assert set(synapse_ray.__all__) == set(synapse_ray._EXPORTS) | {"__version__"}
    assert DOCUMENTED <= set(synapse_ray.__all__)


def test_every_public_name_is_the_object_its_module_defines():
    for name, module in synapse_ray._EXPORTS.items():
        assert getattr(synapse_ray, name) is getattr(importlib.import_module(module), name), name


def test_importing_the_package_loads_neither_ray_nor_the_server():
    code = (
        "import sys, synapse_ray; print(sorted(m for m in ('ray', 'aiohttp', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
