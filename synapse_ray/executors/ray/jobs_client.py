"""Reaching the Ray Jobs API: address, Ray token auth, errors that say what to do.

The address comes from the argument, else ``RAY_API_SERVER_ADDRESS``, else an
``http(s)://`` ``RAY_ADDRESS``. Ray decides once per process whether to send
its auth token (``RAY_AUTH_MODE`` as seen at first use), so we read the
token ourselves (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, or
``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token``) and send it as a header:
one process can then talk to clusters with and without token auth.

Also here: the submitter's record of its submissions (``$SYNAPSE_RAY_HOME/
jobs/<submission id>.json``, 0600), holding the channel key that verifies
the job's records, so a new process can re-attach.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from synapse_ray.errors import ClusterError, ConfigurationError
from synapse_ray.executors.ray.connect import AUTH_HINT

DEFAULT_JOBS_ADDRESS_HINT = (
    "pass address='http://HEAD:8265' (--address), or set RAY_API_SERVER_ADDRESS "
    "(through Kubernetes: `kubectl port-forward svc/RAYCLUSTER-head-svc 8265:8265`)"
)


def resolve_jobs_address(address: str | None) -> str:
    """The Jobs API (dashboard) address: argument, RAY_API_SERVER_ADDRESS, or an http(s) RAY_ADDRESS."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or None
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "")
        if env.startswith(("http://", "https://")):
            address = env
    if not address:
        raise ConfigurationError(f"No Ray Jobs API address: {DEFAULT_JOBS_ADDRESS_HINT}.")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(
            f"Ray Jobs API address {address!r} must look like http://HOST:8265 (the dashboard port)"
        )
    return address.rstrip("/")


def auth_headers() -> dict[str, str]:
    """The Ray auth token as a header, if the environment names one (never logged)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token and os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"RAY_AUTH_TOKEN_PATH names {path}, which cannot be read: {exc}"
            ) from None
    if not token and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        try:
            token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        except OSError:
            raise ConfigurationError(
                "RAY_AUTH_MODE=token but no token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
                "(default ~/.ray/auth_token)."
            ) from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def probe(address: str, timeout: float) -> None:
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"No Ray Jobs API at {address} (nothing answered within {timeout:g} s: {exc}). Start a "
            "cluster with `ray start --head` (its dashboard serves the Jobs API on port 8265), or "
            f"{DEFAULT_JOBS_ADDRESS_HINT}.",
            address=address,
        ) from None


def jobs_error(address: str, exc: BaseException) -> Exception:
    """A failed Jobs API call as one of ours, naming the address; auth failures say what to set."""
    text = str(exc).strip()
    if "Authentication" in text or "401" in text or "403" in text or "nauthorized" in text:
        return ClusterError(
            f"The Ray Jobs API at {address} refused our credentials: {text.splitlines()[0]}. {AUTH_HINT}",
            address=address,
        )
    return ClusterError(f"Ray Jobs API at {address}: {text}", address=address)


def make_client(address: str | None, timeout: float = 5.0) -> tuple[str, Any]:
    """A ``JobSubmissionClient`` for the resolved address; fails fast and clearly."""
    from ray.job_submission import JobSubmissionClient

    resolved = resolve_jobs_address(address)
    probe(resolved, timeout)
    try:
        return resolved, JobSubmissionClient(resolved, headers=auth_headers())
    except Exception as exc:  # noqa: BLE001 - Ray raises several types here (AuthenticationError...)
        raise jobs_error(resolved, exc) from None


def not_found(submission_id: str, address: str) -> ConfigurationError:
    return ConfigurationError(
        f"No job with submission id {submission_id!r} at {address} (see `synapse-ray list`).",
        submission_id=submission_id,
    )


# -- the submitter's record of its submissions -------------------------------------
def _store_dir() -> Path:
    home = os.environ.get("SYNAPSE_RAY_HOME", "").strip() or str(Path.home() / ".synapse_ray")
    return Path(home).expanduser() / "jobs"


def save_submission(submission_id: str, data: dict[str, Any]) -> None:
    folder = _store_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{submission_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


def load_submission(submission_id: str) -> dict[str, Any] | None:
    path = _store_dir() / f"{submission_id}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def submission_record_path(submission_id: str) -> Path:
    return _store_dir() / f"{submission_id}.json"
