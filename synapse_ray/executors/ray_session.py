"""Connecting to Ray and checking, before any work is spent, that it can run ours.

Every check here turns a silent hang or an opaque worker-side failure into a
specific error on the driver: an address that does not answer, resources no
node has, code the workers cannot import.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlparse

from synapse_ray.errors import ClusterError, ConfigurationError
from synapse_ray.runtime.aggregator import NAMESPACE

_init_lock = threading.Lock()


def resolve_address(address: str | None) -> str | None:
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"Ray address {address!r} is an HTTP (dashboard / Jobs API) address; RayExecutor needs "
            "the cluster address (host:6379 or ray://host:10001). For the Jobs API set "
            "RAY_API_SERVER_ADDRESS instead of RAY_ADDRESS."
        )
    return address


def probe_address(address: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds, naming the address, if nothing listens there."""
    if address in ("auto", "local"):
        return
    target = address if "://" in address else f"tcp://{address}"
    parsed = urlparse(target)
    if not parsed.hostname or not parsed.port:
        raise ConfigurationError(f"Ray address {address!r} must look like host:port (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"Ray cluster at {address} did not answer within {timeout:g} s ({exc}). "
            "Is `ray start --head` running there? Check --address / RAY_ADDRESS.",
            address=address,
        ) from None


def ensure_ray(
    address: str | None = None, connect_timeout: float = 15.0, runtime_env: dict[str, Any] | None = None
) -> bool:
    """Join the given cluster, or start/join a local one; idempotent.

    Returns True when this call connected the process, with ``runtime_env`` as
    the job's (Ray uploads local ``working_dir``/``py_modules`` only there).
    """
    import ray

    with _init_lock:
        explicit = resolve_address(address)
        if ray.is_initialized():
            if address and address not in ("auto", "local"):
                _check_same_cluster(address, connect_timeout)
            return False
        address = explicit
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "ignore_reinit_error": True}
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
        if address:
            probe_address(address, min(connect_timeout, 10.0))
            kwargs["address"] = address
        else:
            kwargs["include_dashboard"] = False
        try:
            ray.init(**kwargs)
            return True
        except ConnectionError as exc:
            raise ClusterError(
                f"Could not connect to the Ray cluster at {address}: {exc}", address=address
            ) from exc


def local_paths(runtime_env: dict[str, Any] | None) -> list[str]:
    """Local directories in a runtime_env: Ray uploads them only at ray.init time."""
    if not runtime_env:
        return []
    paths = []
    working_dir = runtime_env.get("working_dir")
    if isinstance(working_dir, str) and "://" not in working_dir:
        paths.append(working_dir)
    for module in runtime_env.get("py_modules") or []:
        if isinstance(module, str) and "://" not in module:
            paths.append(module)
    return paths


def _check_same_cluster(address: str, timeout: float) -> None:
    """One process joins one cluster: refuse an explicit address that is not the current one."""
    import ray

    if "://" in address:
        return  # a ray:// client address names a proxy, not the GCS: nothing to compare
    probe_address(address, min(timeout, 10.0))
    current = ray.get_runtime_context().gcs_address
    # Ray rewrites 127.0.0.1 to the machine's address, so hosts may differ in name
    # only; a different port is a different cluster for sure.
    if address.rsplit(":", 1)[-1] != current.rsplit(":", 1)[-1]:
        raise ConfigurationError(
            f"This process is already connected to the Ray cluster at {current}; it cannot also join "
            f"{address}. Use one cluster per driver process."
        )


# -- resources --------------------------------------------------------------
def needs_of(options: dict[str, Any]) -> dict[str, float]:
    need: dict[str, float] = {}
    if options.get("num_cpus"):
        need["CPU"] = float(options["num_cpus"])
    if options.get("num_gpus"):
        need["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        need["memory"] = float(options["memory"])
    for key, value in (options.get("resources") or {}).items():
        need[key] = float(value)
    return need


class ResourceView:
    """The alive nodes' total resources, cached briefly (a GCS call each refresh)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._nodes: list[dict[str, float]] = []
        self._at = 0.0

    def nodes(self) -> list[dict[str, float]]:
        import ray

        if time.monotonic() - self._at > self.ttl or not self._nodes:
            self._nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
            self._at = time.monotonic()
        return self._nodes

    def check(self, what: str, options: dict[str, Any]) -> None:
        """Raise if no alive node could ever satisfy ``options`` (instead of hanging)."""
        need = needs_of(options)
        if not need:
            return
        nodes = self.nodes()
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        self._at = 0.0  # maybe a node just joined: look again once
        nodes = self.nodes()
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        missing = []
        for key, value in need.items():
            best = max((node.get(key, 0.0) for node in nodes), default=0.0)
            if best < value:
                missing.append(f"{key}={value:g} (largest on any node: {best:g})")
        if not missing:
            missing.append("that combination on a single node")
        raise ClusterError(
            f"{what} needs {_fmt(need)}, which no node in the Ray cluster can provide: missing "
            + ", ".join(missing)
            + f". Cluster nodes: {len(nodes)}. Lower the request or add a node with these resources.",
            missing=missing,
        )


def _fmt(need: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in need.items())


# -- code shipping ------------------------------------------------------------
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
    error = ray.get(probe.remote(module_name), timeout=300)
    if error is None:
        _importable.add(key)
    else:
        raise ConfigurationError(
            f"Ray workers cannot import {module_name!r} (needed for {cls.__qualname__}): {error}. "
            "Ship your code with the job: RayExecutor(runtime_env={'working_dir': '.'}) or "
            "runtime_env={'py_modules': [...]}, or install the package on every node.",
            module=module_name,
        )
