"""Code shipping: make sure workers can load the action class before anything runs.

Classes from file targets and ``__main__`` travel by value (cloudpickle);
anything else must be importable on the workers, which a tiny probe task
checks once per module and runtime_env.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.executors.ray.errors import map_ray_errors

PROBE_TIMEOUT = 300.0  # a first worker may install a runtime_env (pip) before it can answer
_importable: set[str] = set()


def _probe_import(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as text
        return f"{type(exc).__name__}: {exc}"
    return None


def ship_code(cls: type, runtime_env: dict[str, Any] | None = None) -> None:
    """Make sure workers can load ``cls``: by value for files and ``__main__``, else import-probe.

    Only successes are remembered: after a failure the user fixes the
    ``runtime_env`` (or installs the package) and the next submit probes again.
    """
    import ray
    from ray import cloudpickle

    module_name = cls.__module__
    module = sys.modules.get(module_name)
    if module_name == "__main__" or module_name.startswith("synapse_ray_user_"):
        if module is not None and module_name != "__main__":
            cloudpickle.register_pickle_by_value(module)
        return
    key = f"{module_name} {json.dumps(runtime_env, sort_keys=True, default=str)}"
    if key in _importable:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_import)
    if runtime_env:
        probe = probe.options(runtime_env=runtime_env)
    with map_ray_errors(f"Checking that Ray workers can import {module_name!r}"):
        error = ray.get(probe.remote(module_name), timeout=PROBE_TIMEOUT)
    if error is None:
        _importable.add(key)
    else:
        raise ConfigurationError(
            f"Ray workers cannot import {module_name!r} (needed for {cls.__qualname__}): {error}. "
            "Ship your code with the job: RayExecutor(runtime_env={'working_dir': '.'}) or "
            "runtime_env={'py_modules': [...]}, or install the package on every node.",
            module=module_name,
        )
