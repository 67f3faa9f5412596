"""Connecting to Ray, bounded and with errors that say what to do.

Every check here turns a silent hang into a specific error on the driver: an
address that does not answer, a stale "current cluster" pointer left by a
``ray start`` cluster that died without ``ray stop`` (a plain ``ray.init()``
would retry it for minutes), a token-auth cluster without the token.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from synapse_ray.errors import ClusterError, ConfigurationError
from synapse_ray.executors.ray.aggregator import NAMESPACE
from synapse_ray.runtime.env import applied_env

SOFT_LIMIT_ENV = "RAY_num_workers_soft_limit"
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
            probe_address(address, connect_timeout)
            check_auth(address)
            kwargs["address"] = address
            starts = address == "local"
        else:
            starts = not check_current_cluster(connect_timeout)
            kwargs["include_dashboard"] = False
        try:
            with applied_env(local_instance_env() if starts else None):  # the raylet inherits it
                ray.init(**kwargs)
            return True
        except (ConnectionError, RuntimeError) as exc:
            raise connect_error(address, exc) from exc


def local_instance_env(cpus: int | None = None) -> dict[str, str]:
    """The environment of a Ray instance this process starts (its raylet reads it).

    One idle worker process more than CPUs (Ray keeps as many as CPUs): a step
    that fans shards out over every CPU needs CPUs + 1 processes, its own and
    one per shard, and at Ray's default the raylet stops the extra one a
    second after each fan-out and the next fan-out starts one again (about
    0.4 s of CPU, a slot idle meanwhile: 2 to 7 % of a 64-shard fan-out on 2
    CPUs, see docs/performance.md). A value the user set wins.
    """
    if SOFT_LIMIT_ENV in os.environ:
        return {}
    if cpus is None:
        try:
            from ray._private.utils import get_num_cpus  # what Ray will count (container limits)

            cpus = int(get_num_cpus())
        except (ImportError, AttributeError):  # Ray moved it
            cpus = os.cpu_count() or 1
    return {SOFT_LIMIT_ENV: str(cpus + 1)}


def check_auth(address: str, timeout: float = 5.0) -> None:
    """Fail at once on a Ray token-auth refusal; ``ray.init`` would retry it for about 20 s.

    One GCS call with Ray's own client; anything but an auth error is left to ``ray.init``.
    """
    if "://" in address or address in ("auto", "local"):
        return
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # pragma: no cover - Ray moved them: ray.init reports instead
        return
    try:
        GcsClient(address=address).internal_kv_get(b"synapse_ray_auth_probe", b"synapse_ray", timeout=timeout)
    except AuthenticationError as exc:
        raise ClusterError(
            f"Ray refused the connection to {address}: {str(exc).split('. ')[0]}. {AUTH_HINT}",
            address=address,
        ) from None
    except Exception:  # noqa: BLE001 - not an auth problem: ray.init gives the full story
        return


AUTH_HINT = (
    "The cluster uses Ray token authentication: set RAY_AUTH_MODE=token and give the token in "
    "RAY_AUTH_TOKEN, or a file in RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token, which `ray start` "
    "on the head node writes)."
)


def connect_error(address: str | None, exc: BaseException) -> ClusterError:
    """A failed connect as one error that says what to do."""
    text = str(exc)
    where = address or "the local machine"
    cause = f"{text} {exc.__cause__ or ''}"  # Ray wraps the GCS handshake error in a bare "Failed to connect"
    if "uthentica" in cause or "token" in cause.lower():
        return ClusterError(
            f"Ray refused the connection to {where}: {text.strip()}. {AUTH_HINT}", address=address
        )
    message = f"Could not connect to the Ray cluster at {where}: {text.strip()}"
    if address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        # The address answered our probe, so a refused handshake is most likely Ray's token
        # auth: Ray itself only logs "Authentication token is missing or incorrect".
        message += f". Something answers there; if the cluster uses token authentication: {AUTH_HINT}"
    return ClusterError(message, address=address)


def current_cluster_pointer() -> tuple[Path, str] | None:
    """Ray's "current cluster" pointer (written by ``ray start``), if one exists."""
    try:
        from ray._common.utils import get_ray_address_file

        path = Path(get_ray_address_file(None))
    except (ImportError, AttributeError):  # Ray moved it: fall back to its documented place
        import tempfile

        path = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    return (path, address) if address else None


def check_current_cluster(timeout: float) -> bool:
    """With no address, ``ray.init()`` joins the cluster the pointer names: it must answer.

    A pointer to a dead cluster otherwise makes ``ray.init()`` retry it for
    minutes without a word. True when there is one to join (else Ray starts one).
    """
    found = current_cluster_pointer()
    if found is None:
        return False
    path, address = found
    try:
        probe_address(address, timeout)
    except ClusterError:
        raise ClusterError(
            f"No address was given, so Ray would join the cluster its current-cluster pointer names "
            f"({address}, in {path}), but nothing answers there: a `ray start` cluster ended without "
            f"`ray stop`. Run `ray stop` (it clears the pointer), or pass address='local' "
            "(--address local) for a private Ray instance.",
            address=address,
        ) from None
    return True


def route_ray_logs(path: Path) -> None:
    """Send Ray's own log lines (start-up, warnings) to ``path`` instead of the terminal.

    Ray configures its ``ray`` logger with a stderr handler at import; a live
    progress display should not be interleaved with them. ``--verbose`` skips this.
    """
    import ray  # noqa: F401 - configures the logger we redirect

    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("ray")
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
    logger.addHandler(file_handler)
    logger.propagate = False


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
    probe_address(address, timeout)
    current = ray.get_runtime_context().gcs_address
    # Ray rewrites 127.0.0.1 to the machine's address, so hosts may differ in name
    # only; a different port is a different cluster for sure.
    if address.rsplit(":", 1)[-1] != current.rsplit(":", 1)[-1]:
        raise ConfigurationError(
            f"This process is already connected to the Ray cluster at {current}; it cannot also join "
            f"{address}. Use one cluster per driver process."
        )
