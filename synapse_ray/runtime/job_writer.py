"""Writing a run's progress, metrics and log entries to its backend job.

The component that holds a run's progress state (the in-process sink, or the
Ray aggregator) is the single writer: it offers each new snapshot here, and
one thread sends the latest one at most every ``min_interval`` seconds, plus
the final one when the run ends. A backend that is slow or down delays or
drops progress records; it never slows or fails the run. Log entries that
reach the writer go to the backend through a ``JobLogBatcher`` (bounded,
batched, never blocking).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from synapse_ray.runtime.job_logs import JobLogBatcher
from synapse_ray.runtime.logging import get_logger
from synapse_ray.runtime.progress import LOG, ProgressEvent, ProgressSnapshot
from synapse_ray.runtime.status import RunStatus

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec

JOB_STATUS = {
    RunStatus.PENDING: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


def progress_record(snap: ProgressSnapshot) -> dict[str, Any]:
    """What the job record keeps: overall, per step and per category, as plain JSON."""
    return {
        "run_id": snap.run_id,
        "overall": snap.overall,
        "current_step": snap.current_step,
        "steps": {
            name: {"percent": s.percent, "status": s.status.value, "attempt": s.attempt}
            for name, s in snap.steps.items()
        },
        "categories": {name: {"current": c.current, "total": c.total} for name, c in snap.categories.items()},
        "error": snap.error,
    }


def metrics_record(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``{category: {key: value}}`` as upstream's job records hold them (``category.key`` split once)."""
    record: dict[str, Any] = {}
    for name, value in metrics.items():
        category, dot, key = name.partition(".")
        if dot:
            group = record.setdefault(category, {})
            if isinstance(group, dict):
                group[key] = value
                continue
        record[name] = value
    return record or None


class JobProgressWriter:
    def __init__(self, backend: BackendSpec, job_id: int | str, min_interval: float = 1.0) -> None:
        self.backend = backend
        self.job_id = job_id
        self.min_interval = min_interval
        self.logs = JobLogBatcher(backend, job_id)
        self._latest: ProgressSnapshot | None = None
        self._written_version = -1
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._closed = False

    def offer(self, snap: ProgressSnapshot, events: list[ProgressEvent] | None = None) -> None:
        """Cheap: keep the newest snapshot (and queue the batch's log entries); a thread sends them."""
        if events:
            self.logs.offer([dict(ev.data) for ev in events if ev.kind == LOG and ev.data])
        with self._cond:
            self._latest = snap
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="synapse-ray-job-writer", daemon=True)
                self._thread.start()

    def wait_final(self, timeout: float = 10.0) -> bool:
        """Wait until the terminal snapshot and the queued log entries have been sent (or given up on)."""
        deadline = time.monotonic() + timeout
        done = self._done.wait(timeout)
        return self.logs.close(max(0.0, deadline - time.monotonic())) and done

    def close(self) -> None:
        """Stop: the run was dropped by its holder (evicted), no final snapshot will come."""
        self.logs.close(0.0)
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._closed and (
                    self._latest is None or self._latest.version == self._written_version
                ):
                    self._cond.wait()
                if self._closed:
                    return  # never parked for good: a dropped run's writer thread ends here
                snap = self._latest
            terminal = snap.status.is_terminal
            pause = self.min_interval - (time.monotonic() - last)
            if pause > 0 and not terminal:
                time.sleep(pause)  # coalesce: the newest snapshot is taken after the pause
                with self._cond:
                    snap = self._latest or snap
                terminal = snap.status.is_terminal
            self._write(snap)
            self._written_version = snap.version
            last = time.monotonic()
            if terminal:
                self._done.set()
                return

    def _write(self, snap: ProgressSnapshot) -> None:
        from synapse_ray.backend.client import get_client

        try:
            get_client(self.backend).update_job(
                self.job_id,
                status=JOB_STATUS[snap.status],
                progress_record=progress_record(snap),
                metrics_record=metrics_record(dict(snap.metrics)),
            )
        except Exception as exc:  # noqa: BLE001 - progress records never fail a run
            get_logger("synapse_ray.progress").warning(
                "job_progress_write_failed", job_id=self.job_id, error=f"{type(exc).__name__}: {exc}"
            )
