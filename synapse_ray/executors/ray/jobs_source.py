"""The submitter's view of a Ray Job: a ``ProgressSource`` fed by the job's log and status.

A daemon thread polls the Jobs API (``get_job_logs``, ``get_job_info``),
feeds the new part of the log to a ``RecordReader`` and wakes waiters when
anything changed. When the job has ended it reads the log once more, so the
last lines and the final record are never lost. The poll interval grows with
the log (the API returns the whole log each time).
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from synapse_ray import errors as errors_mod
from synapse_ray.errors import ActionError, ClusterError, RunCancelledError, SynapseRayError
from synapse_ray.executors.ray.jobs_channel import RecordReader
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.status import RunStatus

MIN_INTERVAL = 0.1  # while a job is young, its result may be a second away
SETTLED_INTERVAL = 0.5  # after the first half minute
MAX_INTERVAL = 5.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LOG_SETTLE = 5.0
GIVE_UP_AFTER = 120.0  # seconds of the Jobs API failing without a break
UNVERIFIED_STATUS = {
    "PENDING": RunStatus.PENDING,
    "RUNNING": RunStatus.RUNNING,
    "SUCCEEDED": RunStatus.SUCCEEDED,
    "FAILED": RunStatus.FAILED,
    "STOPPED": RunStatus.CANCELLED,
}
NO_KEY_WARNING = "unverified: this machine holds no channel key for this submission (Ray's status only)"


class JobSource:
    def __init__(self, client: Any, address: str, submission_id: str, key: str | None, run_id: str) -> None:
        self.client = client
        self.address = address
        self.submission_id = submission_id
        self.run_id = run_id
        self.reader = RecordReader(key, submission_id)
        self.lines: list[str] = []
        self.job_status: str | None = None
        self.job_message: str | None = None
        self.info: Any = None
        self.grace_s = 10.0  # set by the handle's cancel before request_cancel
        self._offset = 0
        self._changes = 0
        self._ended = threading.Event()  # job terminal and its log drained
        self._outcome = threading.Event()  # the final record arrived, or the job ended
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._ended_at: float | None = None
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name=f"synapse-ray-job-{submission_id}"
        )

    def start(self) -> JobSource:
        self._thread.start()
        return self

    # -- polling -------------------------------------------------------------------
    def _loop(self) -> None:
        started = time.monotonic()
        failing_since: float | None = None
        while True:
            try:
                terminal = self.poll()
                failing_since = None
            except Exception as exc:  # noqa: BLE001 - the API may blink; give up after a while
                failing_since = failing_since or time.monotonic()
                terminal = time.monotonic() - failing_since > GIVE_UP_AFTER
                if terminal:
                    self._error = exc
            if terminal:
                with self._cond:
                    self._changes += 1
                    self._ended.set()
                    self._outcome.set()
                    self._cond.notify_all()
                return
            base = MIN_INTERVAL if time.monotonic() - started < 30 else SETTLED_INTERVAL
            time.sleep(min(MAX_INTERVAL, base + self._offset / 4_000_000))

    def poll(self) -> bool:
        """One read of status and log; True once the job ended and its log is drained."""
        info = self.client.get_job_info(self.submission_id)
        status = str(getattr(info.status, "value", info.status))
        text = self.client.get_job_logs(self.submission_id)
        new, self._offset = text[self._offset :], len(text)
        lines = self.reader.feed(new) if new else []
        terminal = status in TERMINAL
        if terminal:
            lines += self.reader.flush()
        with self._cond:
            changed = bool(lines) or status != self.job_status or new
            self.lines.extend(lines)
            self.info, self.job_status, self.job_message = info, status, info.message
            if changed:
                self._changes += 1
                self._cond.notify_all()
        if self.reader.final is not None:
            self._outcome.set()  # verified: no need to wait for the process to exit
        return terminal and (self.reader.final is not None or self._log_settled())

    def _log_settled(self) -> bool:
        """The job ended without our final record in its log (yet): the log file can
        trail the process's exit, so keep reading it for ``LOG_SETTLE`` s before
        concluding the record will never come."""
        now = time.monotonic()
        if self._ended_at is None:
            self._ended_at = now
        return now - self._ended_at >= LOG_SETTLE

    # -- ProgressSource ----------------------------------------------------------------
    def snapshot(self) -> ProgressSnapshot:
        with self._cond:
            return self._snapshot()

    def _snapshot(self) -> ProgressSnapshot:
        body = self.reader.progress
        snap = ProgressSnapshot.model_validate(body) if body else ProgressSnapshot(run_id=self.run_id)
        update: dict[str, Any] = {"version": self._changes}
        if self.reader.key is None:  # nothing verifies here: Ray's own view, said as such
            update["status"] = UNVERIFIED_STATUS.get(self.job_status or "", RunStatus.PENDING)
            update["warnings"] = [NO_KEY_WARNING]
            update["error"] = self.job_message if self.job_status in ("FAILED", "STOPPED") else None
        elif not snap.status.is_terminal and self.job_status in TERMINAL:
            # the job ended without our final record: killed, or failed before the run began
            update["status"] = RunStatus.CANCELLED if self.job_status == "STOPPED" else RunStatus.FAILED
            update["error"] = snap.error or self.job_message
        elif snap.status == RunStatus.PENDING and self.job_status == "RUNNING":
            update["status"] = RunStatus.RUNNING
        return snap.model_copy(update=update)

    def wait_for_update(self, version: int, timeout: float) -> ProgressSnapshot:
        with self._cond:
            self._cond.wait_for(lambda: self._changes != version or self._ended.is_set(), timeout)
            return self._snapshot()

    def logs(self) -> list[dict[str, Any]]:
        with self._cond:
            return [{"line": line} for line in self.lines]

    def request_cancel(self) -> None:
        """Submit the stop control job: the entrypoint cancels with our grace period."""
        if self.job_status in TERMINAL or self.reader.final is not None:
            return  # nothing left to stop
        self.client.submit_job(
            entrypoint=f"python -m synapse_ray.entrypoint stop {self.submission_id} --grace {self.grace_s:g}",
            metadata={"synapse_ray": "stop", "target_submission": self.submission_id},
            entrypoint_num_cpus=0,
        )

    def kill(self) -> None:
        """After the grace period: Ray's own stop (SIGTERM, then SIGKILL)."""
        if self.job_status not in TERMINAL:
            self.client.stop_job(self.submission_id)

    def finish(self, timeout: float) -> None:
        return None  # the in-cluster aggregator wrote the job record before the entrypoint ended

    # -- the outcome -----------------------------------------------------------------
    def wait_ended(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def outcome(self) -> Any:
        """Block until the final record (or the job's end); the result, or the error rebuilt here.

        The log keeps being followed after the final record, until the job ends.
        """
        self._outcome.wait()
        if self._error is not None:
            raise ClusterError(
                f"Lost the Ray Jobs API at {self.address} while following {self.submission_id}: "
                f"{self._error}",
                address=self.address,
            ) from self._error
        final = self.reader.final
        if final is None:
            return self._no_record()
        if final.get("status") == RunStatus.SUCCEEDED.value:
            value = _unpickle(final.get("result_pickle"))
            return final.get("result") if value is _MISSING else value
        raise _rebuild_error(final)

    def _no_record(self) -> Any:
        if self.reader.key is None:
            raise no_key_error(self.submission_id)
        message = self.job_message or "no message"
        if self.job_status == "STOPPED":
            raise RunCancelledError(
                f"Job {self.submission_id} was stopped before it reported an outcome ({message})"
            )
        raise ClusterError(
            f"Job {self.submission_id} ended {self.job_status} without a result record: {message}. "
            f"See `synapse-ray logs {self.submission_id}`.",
            address=self.address,
        )


_MISSING = object()


def _unpickle(data: str | None) -> Any:
    """Records are verified before we get here: only the entrypoint could have written this."""
    if not data:
        return _MISSING
    from ray import cloudpickle

    try:
        return cloudpickle.loads(base64.b64decode(data))
    except Exception:  # noqa: BLE001 - a type missing here: fall back to the JSON form
        return _MISSING


def _rebuild_error(final: dict[str, Any]) -> BaseException:
    err = _unpickle(final.get("error_pickle"))
    if isinstance(err, BaseException):
        return err
    data = final.get("error") or {}
    cls = getattr(errors_mod, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, SynapseRayError)):
        cls = RunCancelledError if final.get("status") == RunStatus.CANCELLED.value else ActionError
    rebuilt = cls(data.get("message", "the job failed"), **(data.get("fields") or {}))
    if data.get("traceback"):
        rebuilt.__cause__ = errors_mod.RemoteTraceback(data["traceback"])
    return rebuilt


def no_key_error(submission_id: str) -> errors_mod.ConfigurationError:
    from synapse_ray.executors.ray.jobs_client import submission_record_path

    return errors_mod.ConfigurationError(
        f"Cannot verify the outcome of {submission_id}: its channel key is not on this machine "
        f"({submission_record_path(submission_id)} is written by the process that submitted it; "
        "copy it here to attach from elsewhere).",
        submission_id=submission_id,
    )
