"""Run an action in this process, in a background thread. For debugging and tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from synapse_ray.executors.base import (
    ActionTarget,
    Executor,
    RunHandle,
    settle_error,
    status_for,
    wrap_error,
)
from synapse_ray.runtime.context import RuntimeContext, new_run_id
from synapse_ray.runtime.job_writer import JobProgressWriter
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, ProgressReporter, wait_for_state
from synapse_ray.runtime.status import RunStatus
from synapse_ray.steps.placement import InProcessPlacement

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec


class LocalRunHandle(RunHandle):
    def __init__(self, runtime: RuntimeContext, sink: LocalSink) -> None:
        self.run_id = runtime.run_id
        self.runtime = runtime
        self._sink = sink
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self, action: Any) -> None:
        rt = self.runtime
        rt.progress.run_status(RunStatus.RUNNING.value)
        try:
            self._result = action.run()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = settle_error(wrap_error(action.action_name, exc), rt.cancel_token.cancelled)
            rt.logger.error("run_failed", error=str(self._error))
        finally:
            status = status_for(self._error)
            rt.progress.run_status(status.value, str(self._error) if self._error else None)
            rt.progress.close()
            if self._sink.writer is not None:
                self._sink.writer.wait_final(10.0)  # the job record shows the outcome before result()
            self._done.set()

    def start(self, action: Any) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(action,), name=f"synapse-ray-run-{self.run_id}", daemon=True
        )
        self._thread.start()

    def status(self) -> RunStatus:
        with self._sink.lock:
            return self._sink.state.status

    def progress(self) -> ProgressSnapshot:
        with self._sink.lock:
            return self._sink.state.snapshot()

    def wait_for_update(self, version: int, timeout: float = 1.0) -> ProgressSnapshot:
        wait_for_state(self._sink, version, timeout)
        return self.progress()

    def cancel(self, grace_s: float = 10.0) -> None:
        """Cooperative: the running step sees ``ctx.cancelled``; no further step starts.

        A thread cannot be killed: a step (or a simple action) that never checks
        the flag runs to its end. If that was the last of the work, the run ends
        SUCCEEDED; otherwise it ends CANCELLED and completed steps roll back.
        """
        self.runtime.cancel_token.cancel("cancelled by user")
        self._done.wait(grace_s)

    def logs(self) -> list[dict[str, Any]]:
        with self._sink.lock:
            return list(self._sink.state.logs)


class LocalExecutor(Executor):
    """Runs the action in this process; same API and semantics as the Ray executors."""

    def __init__(self, backend: BackendSpec | None = None, env: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.env = dict(env or {})

    def submit(
        self,
        action: ActionTarget,
        params: Mapping[str, Any] | Any = None,
        job_id: int | str | None = None,
        run_id: str | None = None,
    ) -> LocalRunHandle:
        cls, validated, backend = self.prepare(action, params, job_id)
        run_id = run_id or new_run_id()
        writer = JobProgressWriter(backend, job_id) if job_id is not None and backend is not None else None
        sink = LocalSink(ProgressState(run_id=run_id), writer)
        runtime = RuntimeContext(
            run_id=run_id,
            job_id=None if job_id is None else str(job_id),
            env=self.env,
            backend=backend,
            progress=ProgressReporter(sink),
            action_name=cls.action_name,
        )
        runtime.step_placement = InProcessPlacement()
        handle = LocalRunHandle(runtime, sink)
        handle.start(cls(validated, runtime))
        return handle
