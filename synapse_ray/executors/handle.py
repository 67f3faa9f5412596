"""``RunHandle``: the one handle every executor returns.

A handle pairs a run thread (which carries the run to its end and records
the outcome whether or not anyone polls) with a ``ProgressSource`` (which
holds the run's progress state: an in-process sink, or the Ray aggregator).
Executors differ only in the work they hand to ``start`` and the source and
kill switch they plug in.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from synapse_ray.errors import RunTimeoutError
from synapse_ray.executors.runners import RUNNERS
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.status import RunStatus
from synapse_ray.steps.orchestrator import settle, status_for

FINAL_RECORD_TIMEOUT = 10.0
# The most the bookkeeping after a run's end can take with an aggregator that stopped
# answering: the returned tail's wait (10 s), the final status's sync (10 s), and
# ``finish`` (its 10 s, 10 s more for the aggregator, then the driver's own write).
SETTLE_BOUND = 5 * FINAL_RECORD_TIMEOUT


class ProgressSource(Protocol):
    """Where a run's progress state lives, seen from the driver."""

    def snapshot(self) -> ProgressSnapshot: ...

    def wait_for_update(self, version: int, timeout: float) -> ProgressSnapshot: ...

    def logs(self) -> list[dict[str, Any]]: ...

    def request_cancel(self) -> None: ...

    def finish(self, timeout: float) -> None:
        """After the final status was sent: make sure the holder has it and the
        backend job record is written (bounded by ``timeout``)."""


class RunHandle:
    """A submitted run: poll it, follow its progress, wait for it, cancel it."""

    def __init__(
        self,
        runtime: RuntimeContext,
        source: ProgressSource,
        kill: Callable[[], Any] | None = None,
    ) -> None:
        self.run_id = runtime.run_id
        self.runtime = runtime
        self.source = source
        self._kill = kill
        self._done = threading.Event()  # the outcome is known
        self._settled = threading.Event()  # ... and the progress holder and job record have it
        self._ending = False  # the work returned; the final status is on its way
        self._result: Any = None
        self._error: BaseException | None = None
        self._final: RunStatus | None = None

    # -- the run ---------------------------------------------------------------
    def start(self, work: Callable[[], Any], then: Callable[[], Any] | None = None) -> RunHandle:
        """Run ``work`` on a run thread. ``then`` is bookkeeping the work left for after its
        caller has the outcome (it runs before the final status is sent)."""
        RUNNERS.start(functools.partial(self._main, work, then))
        return self

    def _main(self, work: Callable[[], Any], then: Callable[[], Any] | None) -> None:
        rt = self.runtime
        result: Any = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            error = exc
        self._ending = True
        error = settle(error, rt.cancel_token.cancelled, rt.action_name)
        status = status_for(error)
        if error is not None:
            rt.logger.error("run_failed", error=str(error))
        self._result, self._error, self._final = result, error, status
        if rt.job_id is None:
            self._done.set()  # no record to wait for: the caller need not wait for the bookkeeping
            time.sleep(0)  # let a waiting caller take the GIL before the bookkeeping below
        if then is not None:
            try:
                then()
            except Exception as exc:  # noqa: BLE001 - the outcome stands; the final status still goes
                rt.logger.warning("run_bookkeeping_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            # after every batch sent before has landed (see final_status)
            rt.progress.final_status(status.value, str(error) if error else None)
            self.source.finish(FINAL_RECORD_TIMEOUT)  # with a job, its record shows the outcome first
        except BaseException as exc:  # noqa: BLE001 - reporting must never lose the outcome (Ray shutting
            # down raises SystemExit in this daemon thread: the outcome is recorded already)
            rt.logger.warning("final_progress_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._settled.set()
            self._done.set()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; return its result or re-raise its error."""
        if not self._done.wait(timeout):
            raise RunTimeoutError(f"Run {self.run_id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    # -- reading -----------------------------------------------------------------
    def status(self) -> RunStatus:
        if self._done.is_set():
            return self._final or RunStatus.FAILED  # known here before the holder has it
        return self.source.snapshot().status

    def _after_the_end(self) -> None:
        """A run that ended is read once its last events and final status have landed."""
        if self._done.is_set():
            self._settled.wait(SETTLE_BOUND)

    def progress(self) -> ProgressSnapshot:
        self._after_the_end()
        return self.source.snapshot()

    def wait_for_update(self, version: int, timeout: float = 1.0) -> ProgressSnapshot:
        """Block until progress moves past ``version`` (or timeout); return a snapshot."""
        if self._done.is_set():
            return self.progress()
        return self.source.wait_for_update(version, timeout)

    def logs(self) -> list[dict[str, Any]]:
        self._after_the_end()
        return self.source.logs()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunStatus:
        self._done.wait(timeout)
        return self.status()

    def wait_settled(self, timeout: float) -> bool:
        """Wait for a run that has ended to finish its bookkeeping (final job record)."""
        if not self._ending:
            return True
        return self._settled.wait(timeout)

    # -- cancel ------------------------------------------------------------------
    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the run to stop; after ``grace_s``, kill what runs the current work.

        Steps see ``ctx.cancelled`` and no further step starts; completed steps
        roll back. Where nothing can be killed (in-process runs), a step that
        never checks the flag runs to its end.
        """
        self.runtime.cancel_token.cancel("cancelled by user")
        try:
            self.source.request_cancel()
        except Exception as exc:  # noqa: BLE001 - the local token is set; the kill is the fallback
            self.runtime.logger.warning("cancel_request_failed", error=f"{type(exc).__name__}: {exc}")
        if self._done.wait(grace_s) or self._kill is None:
            return
        self._kill()
        self._done.wait(max(grace_s, 30.0))

    def __repr__(self) -> str:
        state = self._final.value if self._final else "running"
        return f"<RunHandle run_id={self.run_id!r} action={self.runtime.action_name!r} {state}>"


def wait_all_settled(handles: list[RunHandle], timeout: float) -> bool:
    """Wait (bounded overall) until every ended run has written its final record."""
    deadline = time.monotonic() + timeout
    ok = True
    for handle in handles:
        ok = handle.wait_settled(max(0.0, deadline - time.monotonic())) and ok
    return ok
