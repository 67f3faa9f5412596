"""What a Ray Job carries: the user's ``working_dir``, and a private per-submission package.

The working dir goes as ``runtime_env["working_dir"]`` with default excludes
(version control, virtualenvs, caches, build output, data dirs) plus the
user's; ``requirements.txt`` becomes ``runtime_env["pip"]`` (an empty one adds
nothing, so Ray does not reject it). Params, the backend spec with its token,
and the channel key travel in a second, private directory named after the
submission (``synapse_job_<hex>``), shipped as a ``py_modules`` entry: the
names are unique per submission, so concurrent submissions never race on a
file, and nothing secret sits in ``runtime_env``, metadata or the entrypoint.
The files are written 0600 here; the entrypoint reads them and deletes them
before any user code is imported.

The preflight walks the package the way Ray does (same excludes, same
``.gitignore`` handling) before anything is uploaded, and refuses a package
over Ray's limit with its largest files, instead of Ray's opaque HTTP error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synapse_ray.errors import ConfigurationError

DEFAULT_EXCLUDES = [
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".ipynb_checkpoints",
    "build",
    "dist",
    "*.egg-info",
    "data",
    "datasets",
    "checkpoints",
    "wandb",
    "mlruns",
    "node_modules",
]
PACKAGE_PREFIX = "synapse_job_"
PRIVATE_FILE = "private.json"


def ray_package_limit() -> int:
    """Ray's own bound on one package (the GCS / gRPC message size)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return int(GCS_STORAGE_MAX_SIZE)


@dataclass
class PackageReport:
    """What the preflight found: total size (uncompressed) and the largest files."""

    root: Path
    total_bytes: int = 0
    files: int = 0
    largest: list[tuple[int, str]] = field(default_factory=list)

    def describe(self, top: int = 5) -> str:
        rows = ", ".join(f"{rel} ({_mib(size)})" for size, rel in self.largest[:top])
        return f"{self.files} files, {_mib(self.total_bytes)}; largest: {rows or '-'}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def scan(root: Path, excludes: list[str], top: int = 10) -> PackageReport:
    """Walk ``root`` as Ray will package it (its excludes and ``.gitignore`` rules)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    report = PackageReport(root)
    sizes: list[tuple[int, str]] = []
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"

    def handler(path: Path) -> None:
        if path.is_file():
            size = path.stat().st_size
            report.total_bytes += size
            report.files += 1
            sizes.append((size, str(path.relative_to(root))))

    _dir_travel(root, [_get_excludes(root, excludes)], handler, include_gitignore=include_gitignore)
    report.largest = sorted(sizes, reverse=True)[:top]
    return report


def preflight(root: Path, excludes: list[str], limit: int | None = None) -> PackageReport:
    """Refuse, before any upload, a working dir over Ray's package limit; list what is big."""
    limit = ray_package_limit() if limit is None else limit
    report = scan(root, excludes)
    if report.total_bytes >= limit:
        raise ConfigurationError(
            f"working_dir {root} is too large to upload as a Ray package: {report.describe()} "
            f"(Ray's limit is {_mib(limit)}). Exclude large files with excludes=[...] / --exclude, "
            "a .gitignore or .rayignore, or put data in the backend or object storage.",
            size=report.total_bytes,
            limit=limit,
        )
    return report


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    if not path.is_file():
        raise ConfigurationError(f"requirements file not found: {path}")
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def write_private_package(
    submission_id: str, params: dict[str, Any], backend: Any, key: str, extra: dict[str, Any]
) -> Path:
    """The per-submission directory shipped as a ``py_modules`` entry: 0600 files, unique name.

    Returns the package directory (its parent is a fresh temp dir to delete after upload).
    """
    name = package_name(submission_id)
    parent = Path(tempfile.mkdtemp(prefix="synapse-ray-submit-"))
    pkg = parent / name
    pkg.mkdir(mode=0o700)
    (pkg / "__init__.py").write_text("")
    body = {
        "params": params,
        "backend": _backend_data(backend),
        "key": key,
        **extra,
    }
    path = pkg / PRIVATE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
    return pkg


def remove_private_package(pkg: Path) -> None:
    shutil.rmtree(pkg.parent, ignore_errors=True)


def package_name(submission_id: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in submission_id)
    return f"{PACKAGE_PREFIX}{safe}"


def _backend_data(backend: Any) -> dict[str, Any] | None:
    if backend is None:
        return None
    data = backend.model_dump()
    data["token"] = backend.token.get_secret_value() if backend.token is not None else None
    return data


def read_private_package(name: str) -> dict[str, Any]:
    """Inside the cluster: find the private package on ``sys.path``, read it, delete the file."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / PRIVATE_FILE
        try:
            text = path.read_text()
        except OSError:
            continue
        try:
            path.unlink()
        except OSError:
            pass
        _keep_from_workers(Path(location))
        return json.loads(text)
    raise ConfigurationError(
        f"the submission package {name!r} is not on this job's path (or was already read): "
        "was the job submitted by RayJobExecutor / synapse-ray submit?"
    )


JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def _keep_from_workers(location: Path) -> None:
    """Drop the private package from the job config this driver hands its workers.

    Ray gives every task and actor of a job the job's ``py_modules``; on other
    nodes that would unpack the private file again. The driver has not called
    ``ray.init`` yet, which reads the job config from this variable.
    """
    raw = os.environ.get(JOB_CONFIG_ENV)
    pkg_dir = next((part for part in location.parts if part.startswith("_ray_pkg_")), None)
    if not raw or pkg_dir is None:
        return
    config = json.loads(raw)
    env = config.get("runtime_env") or {}
    modules = [m for m in env.get("py_modules") or [] if not str(m).endswith(f"/{pkg_dir}.zip")]
    if modules:
        env["py_modules"] = modules
    else:
        env.pop("py_modules", None)
    os.environ[JOB_CONFIG_ENV] = json.dumps(config)
