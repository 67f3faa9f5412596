"""The executor interface and the run handle every executor returns."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from synapse_ray.action import BaseAction
from synapse_ray.errors import ActionError, ConfigurationError, RunCancelledError, StepError, SynapseRayError
from synapse_ray.runtime.logging import configure_logging
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.status import RunStatus
from synapse_ray.targets import load_action

ActionTarget = str | type[BaseAction[Any]]


class RunHandle(ABC):
    """A submitted run: poll it, follow its progress, wait for it, cancel it."""

    run_id: str

    @abstractmethod
    def status(self) -> RunStatus: ...

    @abstractmethod
    def progress(self) -> ProgressSnapshot: ...

    @abstractmethod
    def wait_for_update(self, version: int, timeout: float = 1.0) -> ProgressSnapshot:
        """Block until progress moves past ``version`` (or timeout); return a snapshot."""

    # Set by subclasses: the run thread fills these and sets ``_done``.
    _done: threading.Event
    _result: Any = None
    _error: BaseException | None = None

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; return its result or re-raise its error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"Run {self.run_id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    @abstractmethod
    def cancel(self, grace_s: float = 10.0) -> None: ...

    def logs(self) -> list[dict[str, Any]]:
        return []

    def done(self) -> bool:
        return self.status().is_terminal

    def wait(self, timeout: float | None = None) -> RunStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.wait_for_update(self.progress().version, timeout=0.5)
        return self.status()


class Executor(ABC):
    """Runs an action somewhere. ``execute`` blocks; ``submit`` returns a handle."""

    backend: Any = None  # a BackendSpec, shipped to wherever the action runs

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

    def execute(
        self, action: ActionTarget, params: Mapping[str, Any] | Any = None, job_id: int | str | None = None
    ) -> Any:
        handle = self.submit(action, params, job_id=job_id)
        try:
            return handle.result()
        except KeyboardInterrupt:
            handle.cancel(grace_s=5.0)
            raise

    @abstractmethod
    def submit(
        self, action: ActionTarget, params: Mapping[str, Any] | Any = None, job_id: int | str | None = None
    ) -> RunHandle:
        """Start the run. With ``job_id``, its progress is also written to that backend job."""


def resolve(action: ActionTarget, params: Any) -> tuple[type[BaseAction[Any]], Any]:
    """Load the target and validate params: every bad input fails here, before any work."""
    cls = load_action(action)
    return cls, cls.validate_params(params)


def wrap_error(action_name: str, exc: BaseException) -> BaseException:
    """Give an action's failure our type (chained to the original) unless it has one."""
    if isinstance(exc, StepError | RunCancelledError | ActionError):
        return exc
    if isinstance(exc, SynapseRayError):
        return exc
    err = ActionError(
        f"Action '{action_name}' failed: {type(exc).__name__}: {exc}",
        action=action_name,
        cause_type=type(exc).__name__,
    )
    err.__cause__ = exc
    return err


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


def settle_error(error: BaseException | None, cancelled: bool) -> BaseException | None:
    """A run that failed after a cancel request ends CANCELLED, the failure as its cause."""
    if error is None or not cancelled or isinstance(error, RunCancelledError):
        return error
    err = RunCancelledError(f"Run cancelled: {error}", reason="cancelled by user")
    err.__cause__ = error
    return err


def status_for(exc: BaseException | None) -> RunStatus:
    if exc is None:
        return RunStatus.SUCCEEDED
    if isinstance(exc, RunCancelledError):
        return RunStatus.CANCELLED
    return RunStatus.FAILED
