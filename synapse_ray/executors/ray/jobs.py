"""``RayJobExecutor``: run an action as a Ray Job, and follow it from anywhere.

``submit`` checks everything it can on this side before any upload (the
target inside ``working_dir``, the params, the requirements file, the package
size, the cluster and its auth), then submits
``python -m synapse_ray.entrypoint run`` with the working dir and a private
per-submission package (see ``jobs_packaging``). Inside the cluster the
entrypoint runs the action with ``RayExecutor``: the one run path.

The handle is the one ``RunHandle``: its run thread waits for the job's
outcome, and its ``ProgressSource`` (``JobSource``) reads the job's signed
records (``jobs_channel``) through nothing but the Jobs HTTP API, so it works
through ``kubectl port-forward`` too. ``cancel(grace_s)`` asks the entrypoint
to cancel cooperatively (steps see ``ctx.cancelled``, completed steps roll
back), and after the grace period stops the job through Ray.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synapse_ray.errors import ConfigurationError, TargetError
from synapse_ray.executors.base import Executor, check_job, resolve
from synapse_ray.executors.handle import RunHandle
from synapse_ray.executors.ray.executor import MODES, _refuse_secrets_in_runtime_env
from synapse_ray.executors.ray.jobs_channel import new_key
from synapse_ray.executors.ray.jobs_client import (
    jobs_error,
    load_submission,
    make_client,
    not_found,
    save_submission,
)
from synapse_ray.executors.ray.jobs_packaging import (
    DEFAULT_EXCLUDES,
    package_name,
    preflight,
    read_requirements,
    remove_private_package,
    write_private_package,
)
from synapse_ray.executors.ray.jobs_source import JobSource
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.context import RuntimeContext, new_run_id
from synapse_ray.runtime.logging import configure_logging
from synapse_ray.runtime.reporter import NullSink, ProgressReporter

META_KIND = "synapse_ray"  # metadata key marking our jobs: "run" (and "stop" for control jobs)
# Ray's stop comes this long after the entrypoint's own grace ran out: the stop job needs a
# moment to start, and the entrypoint's kill and rollback should not be cut short.
STOP_MARGIN = 10.0


class RayJobHandle(RunHandle):
    """A ``RunHandle`` for a Ray Job, plus its ``submission_id`` and Ray ``job_id``."""

    source: JobSource

    def __init__(self, runtime: RuntimeContext, source: JobSource) -> None:
        super().__init__(runtime, source, kill=source.kill)
        self.submission_id = source.submission_id

    @property
    def job_id(self) -> str | None:
        """Ray's job id (known once the job's driver started)."""
        info = self.source.info
        return getattr(info, "job_id", None) if info is not None else None

    def cancel(self, grace_s: float = 10.0) -> None:
        """Cooperative stop inside the cluster; the entrypoint kills the current step after
        ``grace_s``; if the job still runs ``STOP_MARGIN`` s later, Ray's ``stop_job``."""
        self.source.grace_s = grace_s
        super().cancel(grace_s + STOP_MARGIN)

    def log_lines(self) -> list[str]:
        return [entry["line"] for entry in self.logs()]

    def __repr__(self) -> str:
        state = self._final.value if self._final else "running"
        return f"<RayJobHandle submission_id={self.submission_id!r} run_id={self.run_id!r} {state}>"


class RayJobExecutor(Executor):
    """Submit actions as Ray Jobs through the Jobs API (``JobSubmissionClient``)."""

    def __init__(
        self,
        address: str | None = None,
        backend: Any = None,
        working_dir: str | Path | None = None,
        requirements: str | Path | None = None,
        runtime_env: dict[str, Any] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        mode: str = "auto",
        metadata: dict[str, str] | None = None,
        excludes: list[str] | None = None,
        py_modules: list[str] | None = None,
        max_package_bytes: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        _refuse_secrets_in_runtime_env(runtime_env, backend)
        runtime_env = dict(runtime_env or {})
        if "working_dir" in runtime_env and working_dir is None:
            working_dir = runtime_env.pop("working_dir")
        self.working_dir = Path(working_dir or ".").expanduser().resolve()
        if not self.working_dir.is_dir():
            raise ConfigurationError(f"working_dir {self.working_dir} is not a directory")
        self.requirements = Path(requirements).expanduser() if requirements is not None else None
        if self.requirements is not None and not self.requirements.is_file():
            raise ConfigurationError(f"requirements file not found: {self.requirements}")
        self.address = address
        self.backend = backend
        self.runtime_env = runtime_env
        self.excludes = [*DEFAULT_EXCLUDES, *(excludes or []), *runtime_env.pop("excludes", [])]
        self.py_modules = [*(py_modules or []), *runtime_env.pop("py_modules", [])]
        self.entrypoint_resources = {
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
        }
        self.mode = mode
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.max_package_bytes = max_package_bytes
        self.env: dict[str, str] = {}
        self._client: Any = None
        self._resolved: str | None = None

    # -- the cluster -------------------------------------------------------------------
    def client(self) -> tuple[str, Any]:
        if self._client is None:
            self._resolved, self._client = make_client(self.address)
        assert self._resolved is not None
        return self._resolved, self._client

    # -- submit ------------------------------------------------------------------------
    def submit(
        self,
        action: str | type,
        params: Mapping[str, Any] | Any = None,
        job_id: int | str | None = None,
        run_id: str | None = None,
    ) -> RayJobHandle:
        """Check everything here, upload, submit; returns the job's handle at once."""
        target = self._target_in_working_dir(action)
        cls, validated = self._resolve_here(target, params)
        configure_logging()
        backend = self.backend
        if backend is None:
            from synapse_ray.backend.spec import BackendSpec

            backend = BackendSpec.from_env()
        check_job(backend, job_id)
        _refuse_secrets_in_runtime_env(self.runtime_env, backend)
        runtime_env = self._runtime_env()
        preflight(self.working_dir, self.excludes, self.max_package_bytes)
        address, client = self.client()
        run_id = run_id or new_run_id()
        submission_id = f"synapse-{run_id}"
        key = new_key()
        params_json = validated.model_dump(mode="json")
        pkg = write_private_package(
            submission_id,
            params_json,
            backend,
            key,
            {
                "submission_id": submission_id,
                "run_id": run_id,
                "job_id": None if job_id is None else str(job_id),
            },
        )
        # the key is on disk before the job exists: a submitter that dies now can still attach
        save_submission(
            submission_id, {"key": key, "run_id": run_id, "address": address, "action": cls.action_name}
        )
        try:
            runtime_env["py_modules"] = [*self.py_modules, str(pkg)]
            entrypoint = (
                f"python -m synapse_ray.entrypoint run --package {package_name(submission_id)} "
                f"--target {shlex.quote(target)} --mode {self.mode}"
            )
            metadata = {
                **self.metadata,
                META_KIND: "run",
                "action": cls.action_name,
                "run_id": run_id,
                "target": target,
                "params_hash": params_hash(params_json),
            }
            if job_id is not None:
                metadata["backend_job_id"] = str(job_id)
            options = {k: v for k, v in self.entrypoint_resources.items() if v is not None}
            try:
                client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env=runtime_env,
                    metadata=metadata,
                    **options,
                )
            except Exception as exc:  # noqa: BLE001 - Ray's HTTP errors, auth errors: one of ours
                raise jobs_error(address, exc) from None
        finally:
            remove_private_package(pkg)
        handle = self._handle(client, address, submission_id, key, run_id, cls.action_name)
        self._track(handle)
        return handle

    def _start(self, cls: type, params: Any, backend: Any, job_id: str | None, run_id: str) -> RunHandle:
        raise NotImplementedError("RayJobExecutor.submit builds its own handle")  # pragma: no cover

    def attach(self, submission_id: str, follow: bool = True) -> RayJobHandle:
        """Follow a job submitted earlier (from this or another process on this machine).

        With ``follow=False`` the job is read once (status, log, records) and not
        followed: enough for a status line or a log dump.
        """
        address, client = self.client()
        info = job_info(client, address, submission_id)
        meta = info.metadata or {}
        if meta.get(META_KIND) != "run":
            raise ConfigurationError(
                f"Job {submission_id!r} at {address} was not submitted by synapse-ray",
                submission_id=submission_id,
            )
        record = load_submission(submission_id) or {}
        return self._handle(
            client,
            address,
            submission_id,
            record.get("key"),
            meta.get("run_id", ""),
            meta.get("action", ""),
            follow=follow,
        )

    def _handle(
        self,
        client: Any,
        address: str,
        submission_id: str,
        key: str | None,
        run_id: str,
        action_name: str,
        follow: bool = True,
    ) -> RayJobHandle:
        source = JobSource(client, address, submission_id, key, run_id)
        runtime = RuntimeContext(
            run_id=run_id,
            job_id=None,  # the cluster side writes the backend record, not this process
            progress=ProgressReporter(NullSink()),
            cancel=CancelToken(),
            action_name=action_name,
        )
        handle = RayJobHandle(runtime, source)
        if not follow:
            source.poll()
            return handle
        source.start()
        return handle.start(source.outcome)  # type: ignore[return-value]

    # -- helpers -----------------------------------------------------------------------
    def _runtime_env(self) -> dict[str, Any]:
        env = dict(self.runtime_env)
        env["working_dir"] = str(self.working_dir)
        env["excludes"] = list(self.excludes)
        requirements = self.requirements
        if requirements is None and (self.working_dir / "requirements.txt").is_file():
            requirements = self.working_dir / "requirements.txt"
        if requirements is not None:
            lines = read_requirements(requirements)
            if lines:  # an empty list would make Ray reject the runtime_env
                env["pip"] = lines
        return env

    def _target_in_working_dir(self, action: str | type) -> str:
        """The target as the entrypoint will see it: relative to ``working_dir``."""
        if isinstance(action, type):
            source = inspect.getsourcefile(action)
            if source is None:
                raise TargetError(f"Cannot find the source file of {action!r}", target=str(action))
            action = f"{source}:{action.__qualname__}"
        if not isinstance(action, str) or ":" not in action:
            return str(action)  # resolve() gives the precise error
        module_part, _, attr = action.rpartition(":")
        if not (module_part.endswith(".py") or "/" in module_part):
            return action  # module:Class, imported from the working dir
        path = Path(module_part).expanduser()
        full = (path if path.is_absolute() else self.working_dir / path).resolve()
        try:
            rel = full.relative_to(self.working_dir)
        except ValueError:
            raise TargetError(
                f"Action file {module_part} is outside working_dir {self.working_dir}: only the "
                "working dir is uploaded. Pass working_dir= (--working-dir) a folder that contains it.",
                target=action,
            ) from None
        if not full.is_file():
            raise TargetError(
                f"Action file {rel} not found inside working_dir {self.working_dir}", target=action
            )
        return f"{rel.as_posix()}:{attr}"

    def _resolve_here(self, target: str, params: Any) -> tuple[type, Any]:
        """Load the action from the working dir on this side: bad input fails before any upload."""
        module_part = target.rpartition(":")[0]
        if module_part.endswith(".py") or "/" in module_part:
            return resolve(f"{self.working_dir / module_part}:{target.rpartition(':')[2]}", params)
        sys.path.insert(0, str(self.working_dir))
        try:
            return resolve(target, params)
        finally:
            sys.path.remove(str(self.working_dir))


def params_hash(params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_info(client: Any, address: str, submission_id: str) -> Any:
    try:
        return client.get_job_info(submission_id)
    except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, AuthenticationError ...
        if "does not exist" in str(exc) or "404" in str(exc) or "not found" in str(exc).lower():
            raise not_found(submission_id, address) from None
        raise jobs_error(address, exc) from None


def list_our_jobs(client: Any, **filters: str | None) -> list[Any]:
    """Our run jobs (not control jobs), newest first, filtered by metadata."""
    jobs = [j for j in client.list_jobs() if (j.metadata or {}).get(META_KIND) == "run"]
    for key, value in filters.items():
        if value:
            jobs = [j for j in jobs if (j.metadata or {}).get(key) == value]
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)
