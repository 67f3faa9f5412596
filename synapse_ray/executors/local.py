"""Run an action in this process, in a background thread. For debugging and tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synapse_ray.executors.base import Executor
from synapse_ray.executors.handle import RunHandle
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.job_writer import JobProgressWriter
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, ProgressReporter, wait_for_state
from synapse_ray.runtime.status import RunStatus
from synapse_ray.steps.placement import InProcessPlacement

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec


class LocalSource:
    """The run's progress state, in this process."""

    def __init__(self, sink: LocalSink) -> None:
        self.sink = sink

    def snapshot(self) -> ProgressSnapshot:
        with self.sink.lock:
            return self.sink.state.snapshot()

    def wait_for_update(self, version: int, timeout: float) -> ProgressSnapshot:
        wait_for_state(self.sink, version, timeout)
        return self.snapshot()

    def logs(self) -> list[dict[str, Any]]:
        with self.sink.lock:
            return list(self.sink.state.logs)

    def request_cancel(self) -> None:
        return None  # the token is in this process: the run sees it directly

    def finish(self, timeout: float) -> None:
        if self.sink.writer is not None:
            self.sink.writer.wait_final(timeout)


class LocalExecutor(Executor):
    """Runs the action in this process; same API and semantics as the Ray executors.

    Cancellation is cooperative only: a thread cannot be killed, so a step
    that never checks ``ctx.cancelled`` runs to its end.
    """

    def __init__(
        self,
        backend: BackendSpec | None = None,
        env: dict[str, str] | None = None,
        strict_result: bool = False,
    ) -> None:
        self.backend = backend
        self.env = dict(env or {})
        self.strict_result = strict_result

    def _start(self, cls: type, params: Any, backend: Any, job_id: str | None, run_id: str) -> RunHandle:
        writer = JobProgressWriter(backend, job_id) if job_id is not None and backend is not None else None
        sink = LocalSink(ProgressState(run_id=run_id), writer)
        runtime = RuntimeContext(
            run_id=run_id,
            job_id=job_id,
            env=self.env,
            backend=backend,
            progress=ProgressReporter(sink),
            action_name=cls.action_name,
            strict_result=self.strict_result,
        )
        runtime.step_placement = InProcessPlacement()
        action = cls(params, runtime)

        def work() -> Any:
            runtime.progress.run_status(RunStatus.RUNNING.value)
            return action.run()

        return RunHandle(runtime, LocalSource(sink)).start(work)
