"""The executor interface: one submit path for every executor.

``submit`` checks every input before any work is spent (target, params,
backend, job), then hands the validated run to the executor's ``_start``,
which only chooses where the work runs. ``execute`` is ``submit`` plus
``result``. An executor is a context manager: ``close`` waits (bounded) for
the final job records of runs that have ended.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from synapse_ray.action import BaseAction
from synapse_ray.errors import ConfigurationError
from synapse_ray.executors.handle import RunHandle, wait_all_settled
from synapse_ray.runtime.context import new_run_id
from synapse_ray.runtime.logging import configure_logging
from synapse_ray.targets import load_action

ActionTarget = str | type[BaseAction[Any]]

CLOSE_TIMEOUT = 30.0


class Executor(ABC):
    """Runs an action somewhere. ``execute`` blocks; ``submit`` returns a handle."""

    backend: Any = None  # a BackendSpec, shipped to wherever the action runs
    env: dict[str, str]

    def prepare(
        self, action: ActionTarget, params: Any, job_id: int | str | None
    ) -> tuple[type[BaseAction[Any]], Any, Any]:
        """Every check before work is spent: target, params, backend (else from env), job."""
        cls, validated = resolve(action, params)
        configure_logging()
        backend = self.backend
        if backend is None:
            from synapse_ray.backend.spec import BackendSpec

            backend = BackendSpec.from_env()
        check_job(backend, job_id)
        return cls, validated, backend

    def submit(
        self,
        action: ActionTarget,
        params: Mapping[str, Any] | Any = None,
        job_id: int | str | None = None,
        run_id: str | None = None,
    ) -> RunHandle:
        """Start the run. With ``job_id``, its progress is also written to that backend job."""
        cls, validated, backend = self.prepare(action, params, job_id)
        handle = self._start(
            cls, validated, backend, None if job_id is None else str(job_id), run_id or new_run_id()
        )
        self._track(handle)
        return handle

    @abstractmethod
    def _start(
        self, cls: type[BaseAction[Any]], params: Any, backend: Any, job_id: str | None, run_id: str
    ) -> RunHandle:
        """Build the run's context and start its work where this executor runs things."""

    def execute(
        self, action: ActionTarget, params: Mapping[str, Any] | Any = None, job_id: int | str | None = None
    ) -> Any:
        handle = self.submit(action, params, job_id=job_id)
        try:
            return handle.result()
        except KeyboardInterrupt:
            handle.cancel(grace_s=5.0)
            raise

    # -- lifecycle -----------------------------------------------------------
    def _track(self, handle: RunHandle) -> None:
        if not hasattr(self, "_handles"):
            self._handles: weakref.WeakSet[RunHandle] = weakref.WeakSet()
            self._handles_lock = threading.Lock()
        with self._handles_lock:
            self._handles.add(handle)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` s) until every run that ended has written its final job record.

        Runs still going are left alone. Returns False if some record was still pending.
        """
        handles = list(getattr(self, "_handles", ()))
        return wait_all_settled(handles, timeout)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(action: ActionTarget, params: Any) -> tuple[type[BaseAction[Any]], Any]:
    """Load the target and validate params: every bad input fails here, before any work."""
    cls = load_action(action)
    return cls, cls.validate_params(params)


def check_job(backend: Any, job_id: int | str | None) -> None:
    """A job to write progress to must exist, and needs a backend: checked before any work."""
    if job_id is None:
        return
    if backend is None:
        raise ConfigurationError(
            f"job_id={job_id!r} needs a backend to write progress to: pass backend=BackendSpec(...) "
            "or set SYNAPSE_HOST and SYNAPSE_ACCESS_TOKEN"
        )
    from synapse_ray.backend.client import get_client

    get_client(backend).get_job(job_id)  # NotFoundError names the job
