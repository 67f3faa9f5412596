"""The driver's view of a run on Ray: the aggregator, with the driver's own copy behind it.

Every read is bounded (``CALL_TIMEOUT``). While the aggregator answers, it is
the source of truth; one that restarted empty is re-seeded from the driver's
copy on the next read that finds it so. If it is gone for good (killed, its
node lost), reads fall back to the driver's mirror (plan, step ends, final
tails, status), and the run's final job record is written from that mirror by
the driver, so a run always completes with the right result, status and record.
"""

from __future__ import annotations

import time
from typing import Any

from synapse_ray.errors import ProgressUnavailableError, RayTimeoutError, WorkerCrashedError
from synapse_ray.executors.ray.aggregator import forget_aggregator
from synapse_ray.executors.ray.errors import map_ray_errors
from synapse_ray.executors.ray.transport import CALL_TIMEOUT, NEEDS_SEED, AggregatorRef, RaySink
from synapse_ray.runtime.job_writer import JobProgressWriter
from synapse_ray.runtime.logging import get_logger
from synapse_ray.runtime.progress import ProgressSnapshot


class AggregatorSource:
    def __init__(
        self,
        aggregator: AggregatorRef,
        run_id: str,
        sink: RaySink | None = None,
        backend: Any = None,
        job_id: str | None = None,
        cancelled: Any = None,
    ) -> None:
        self.aggregator = aggregator
        self.run_id = run_id
        self.sink = sink
        self.backend = backend
        self.job_id = job_id
        self._cancelled = cancelled  # callable: the driver's cancel flag, for re-seeding
        self._lost = False

    # -- reads -------------------------------------------------------------
    def _call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        import ray

        with map_ray_errors(f"Progress aggregator '{self.aggregator.name}'"):
            ref = getattr(self.aggregator.handle, method).remote(self.run_id, *args)
            return ray.get(ref, timeout=timeout)

    def _read(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        if not self._lost:
            try:
                return self._call(method, *args, timeout=timeout)
            except WorkerCrashedError:
                self._lose()
        if self.sink is not None and self.sink.mirror is not None:
            return None
        raise ProgressUnavailableError(
            f"The progress aggregator '{self.aggregator.name}' of run {self.run_id} is gone, "
            "and this process holds no copy of the run's progress."
        )

    def snapshot(self) -> ProgressSnapshot:
        snap = self._read("snapshot")
        return self._checked(snap) if snap is not None else self._mirror()

    def wait_for_update(self, version: int, timeout: float) -> ProgressSnapshot:
        snap = self._read("wait_for_update", version, timeout, timeout=timeout + CALL_TIMEOUT)
        return self._checked(snap) if snap is not None else self._mirror()

    def _checked(self, snap: ProgressSnapshot) -> ProgressSnapshot:
        """A run the aggregator holds nothing of, while the driver's copy has it.

        Finished: the aggregator dropped it (evicted, or lost in a restart); the copy
        answers. Live, with every batch the driver sent landed: Ray restarted the
        aggregator. It is re-seeded now, so the live view and the job record come back
        mid-run, not only at the run's end."""
        sink = self.sink
        if snap.steps or snap.status.is_terminal or sink is None or sink.mirror is None:
            return snap
        mirror = sink.mirror_snapshot()
        if mirror.status.is_terminal:
            return mirror  # a finished run the aggregator dropped (evicted, or lost in a restart)
        if not mirror.steps or not sink.all_landed():
            return snap  # the plan is not the driver's to give yet, or still on its way
        get_logger("synapse_ray.progress").warning("aggregator_reseeded", run_id=self.run_id)
        try:
            self._restore(CALL_TIMEOUT)
            return self._call("snapshot")
        except (WorkerCrashedError, RayTimeoutError):
            self._lose()
            return self._mirror()

    def _restore(self, timeout: float) -> None:
        """Replace what the aggregator holds for the run with the driver's copy (job writer too)."""
        assert self.sink is not None
        cancelled = bool(self._cancelled()) if self._cancelled is not None else False
        events = self.sink.mirror_events()
        self._call("restore", events, cancelled, self.backend, self.job_id, timeout=timeout)

    def logs(self) -> list[dict[str, Any]]:
        """The aggregator's entries; the driver's copy's when it is gone, or holds nothing
        of a finished run (evicted, or lost in a restart), as for snapshots."""
        logs = self._read("logs")
        if logs:
            return logs
        copy = self.sink.mirror_logs() if self.sink is not None else None
        if copy is None:
            return logs or []
        finished, entries = copy
        return entries if logs is None or finished else logs

    def request_cancel(self) -> None:
        if not self._lost:
            try:
                self._call("cancel")
            except WorkerCrashedError:
                self._lose()

    def _mirror(self) -> ProgressSnapshot:
        assert self.sink is not None
        return self.sink.mirror_snapshot()

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            forget_aggregator(self.aggregator.name)
            get_logger("synapse_ray.progress").warning(
                "aggregator_lost", run_id=self.run_id, aggregator=self.aggregator.name
            )

    # -- the end of a run ------------------------------------------------------
    def finish(self, timeout: float) -> None:
        """The final status was sent: confirm it landed, re-seed if needed, await the job record.

        ``timeout`` bounds the whole of it while the aggregator answers (each stage
        gets what is left). An aggregator that stops answering is given
        ``CALL_TIMEOUT`` more, then the driver writes the record itself from its
        copy, within ``timeout`` of its own.
        """
        if self.sink is None:
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        flags = 0
        if not self._lost:
            try:
                with map_ray_errors(f"Progress aggregator '{self.aggregator.name}'"):
                    flags = self.sink.sync(timeout=left())
            except (WorkerCrashedError, RayTimeoutError):
                self._lose()
        if not self._lost and flags & NEEDS_SEED:
            try:
                self._restore(left())
            except (WorkerCrashedError, RayTimeoutError):
                self._lose()
        if self.job_id is None:
            return
        if self._lost:
            self._write_final_from_mirror(timeout)
            return
        try:
            wait = left()
            self._call("wait_final_record", wait, timeout=wait + CALL_TIMEOUT)
        except (WorkerCrashedError, RayTimeoutError):
            self._lose()
            self._write_final_from_mirror(timeout)

    def _write_final_from_mirror(self, timeout: float) -> None:
        snap = self.sink.mirror_snapshot() if self.sink is not None else None
        if snap is None or self.backend is None or self.job_id is None:
            return
        writer = JobProgressWriter(self.backend, self.job_id)
        writer.offer(snap)
        writer.wait_final(timeout)
