"""The worker-side progress reporter: cheap updates, coalesced batched sends.

``set_progress`` is called in tight training loops, so ``update()`` only
stores the latest value per category under a lock. A daemon thread sends
what changed at most every ``interval`` seconds (about 10 batches a second by
default); in-process runs flush step boundaries at once. Events leave in the
order they were made. Sends never block the caller: a sink that is slow or
gone only delays or drops progress.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Protocol

from synapse_ray.runtime.progress import (
    LOG,
    METRIC,
    PLAN,
    PROGRESS,
    RUN,
    SHARD,
    STEP,
    WARN,
    ProgressEvent,
    ProgressPlan,
)
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.sender import SENDER as _SENDER
from synapse_ray.runtime.sender import progress_log as _log
from synapse_ray.runtime.status import StepStatus

DEFAULT_INTERVAL = 0.1
# Step ends that need not wake the sender when step events are not flushed (see step_event).
_QUIET_ENDS = frozenset({StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value})


class ProgressSink(Protocol):
    """Where batches go: an in-process state, a Ray aggregator actor, nowhere."""

    def send(self, events: list[ProgressEvent]) -> None: ...


class NullSink:
    """Drops events. Used where a context was rebuilt without a live transport."""

    def send(self, events: list[ProgressEvent]) -> None:
        return None


class LocalSink:
    """Folds events straight into a ``ProgressState`` living in this process.

    It cannot follow a context into another process (the state would be a
    copy nobody reads), so it pickles to a ``NullSink``.
    """

    def __init__(self, state: ProgressState, writer: Any = None) -> None:
        self.state = state
        self.writer = writer  # a JobProgressWriter when the run has a backend job
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def send(self, events: list[ProgressEvent]) -> None:
        with self.changed:
            self.state.apply(events)
            snap = self.state.snapshot() if self.writer is not None else None
            self.changed.notify_all()
        if snap is not None:
            self.writer.offer(snap, events)

    def __reduce__(self) -> tuple[Any, ...]:
        return (NullSink, ())


_worker_id: tuple[int, str] | None = None


def worker_id() -> str:
    """``host:pid``, looked up once per process: a reporter is rebuilt for every step a
    worker runs, and the host name lookup was a visible part of that."""
    global _worker_id
    pid = os.getpid()
    if _worker_id is None or _worker_id[0] != pid:  # a forked child is a new worker
        _worker_id = (pid, f"{socket.gethostname()}:{pid}")
    return _worker_id[1]


class ProgressReporter:
    """Coalesces ``update()`` calls per category and ships them in batches."""

    def __init__(self, sink: ProgressSink | None = None, interval: float = DEFAULT_INTERVAL) -> None:
        self.sink: ProgressSink = sink if sink is not None else NullSink()
        self.interval = interval
        self.step: str | None = None
        self.attempt = 1
        self.run_attempt = 1  # bumped when the whole run is tried again (a crashed Ray task)
        self._worker = worker_id()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[str, tuple[float, float]] = {}
        self._metrics: dict[str, Any] = {}
        self._shards: dict[str, dict[str, Any]] = {}  # map_shards news, latest per category
        self._outbox: list[ProgressEvent] = []
        self._warned: set[tuple[str, str]] = set()
        self._dirty = False  # something waits for the sender; set under _lock
        self._closed = False
        # Counted from birth: work shorter than one interval sends nothing on its
        # own (a Ray worker's events then ride back with its result, for free).
        self.last_flush = time.monotonic()
        # Step boundaries are flushed by the caller at once in local runs. Where
        # a send costs an actor call between steps (the driver of an actor-mode
        # run, a Ray worker whose unsent events ride back with its result) they
        # leave with the sender's next batch instead, within one interval (a step
        # that ended well: with the next send, see ``step_event``).
        self.flush_step_events = True

    # -- pickling: only the sink and the bindings travel ----------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "interval": self.interval,
            "step": self.step,
            "attempt": self.attempt,
            "run_attempt": self.run_attempt,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sink"], state["interval"])  # type: ignore[misc]
        self.step = state["step"]
        self.attempt = state["attempt"]
        self.run_attempt = state.get("run_attempt", 1)

    def _event(self, kind: str, **fields: Any) -> ProgressEvent:
        return ProgressEvent(kind, worker=self._worker, run_attempt=self.run_attempt, **fields)

    # -- hot path ------------------------------------------------------
    def update(self, category: str, current: float, total: float) -> None:
        if total <= 0 or current < 0 or current > total:
            clamped = self._clamp(category, current, total)
            if clamped is None:
                return
            current, total = clamped
        with self._lock:
            self._pending[category] = (current, total)
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)

    def _clamp(self, category: str, current: float, total: float) -> tuple[float, float] | None:
        new: tuple[float, float] | None
        if total <= 0:
            kind, message = "total", f"progress total for '{category}' must be > 0, got {total}; ignored"
            new = None
        elif current < 0:
            kind, message = "negative", f"progress current for '{category}' was {current} < 0; clamped to 0"
            new = (0.0, float(total))
        else:
            kind, message = (
                "over",
                f"progress current for '{category}' was {current} > total {total}; clamped",
            )
            new = (float(total), float(total))
        if (category, kind) not in self._warned:
            self._warned.add((category, kind))
            _log().warning("progress_clamped", category=category, current=current, total=total)
            self._queue(self._event(WARN, step=self.step, attempt=self.attempt, data={"message": message}))
        return new

    def metric(self, values: dict[str, Any]) -> None:
        with self._lock:
            self._metrics.update(values)
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)

    def shard_event(self, category: str, data: dict[str, Any]) -> None:
        """``map_shards`` news (a fan-out's counts, or one shard's fraction); latest per category wins."""
        with self._lock:
            self._shards[category] = data
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)

    def log_entry(self, entry: dict[str, Any]) -> None:
        self._queue(self._event(LOG, step=self.step, attempt=self.attempt, data=entry))

    # -- ordered events: queued behind what is pending, sent with the next batch --
    def _queue(self, event: ProgressEvent, wake: bool = True) -> None:
        """Queue ``event`` in order; ``wake=False`` leaves it for whatever sends next
        (the sender's next batch, a flush, or ``detach``) without marking this reporter."""
        with self._lock:
            self._drain_pending_locked()
            self._outbox.append(event)
            if not wake:
                return
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)

    def start_plan(self, plan: ProgressPlan) -> None:
        self._queue(self._event(PLAN, data=plan.to_data()))

    def begin_step(self, step: str | None, attempt: int = 1) -> None:
        with self._lock:
            self._drain_pending_locked()
            self.step, self.attempt = step, attempt
            self._outbox.append(self._event(STEP, step=step, attempt=attempt, status="running"))
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)  # the sender picks the start up within one interval

    def end_step(self, status: str, error: str | None = None) -> None:
        """Report the bound step's end and flush: a step's last progress is never held back."""
        self.step_event(self.step or "", self.attempt, status, error)

    def step_event(self, step: str, attempt: int, status: str, error: str | None = None) -> None:
        """A step's news. Flushed at once with ``flush_step_events``; else a step that
        ended well waits for the next send (the next step's start, or the result it
        rides back with) instead of waking the sender thread: on an idle VM that
        wake-up cost a 1 s task about 1 ms on its way back. Any other end (failed,
        cancelled, rolled back) wakes the sender: a retry's wait or a rollback may
        follow, and the end must show meanwhile."""
        data = {"error": error} if error else None
        quiet = not self.flush_step_events and status in _QUIET_ENDS
        self._queue(self._event(STEP, step=step, attempt=attempt, status=status, data=data), wake=not quiet)
        if self.flush_step_events:
            self.flush()

    def run_status(self, status: str, error: str | None = None) -> None:
        data = {"error": error} if error else None
        self._queue(self._event(RUN, status=status, data=data))
        self.flush()

    def final_status(self, status: str, error: str | None = None) -> None:
        """The run's last word, with whatever is still queued, in one batch.

        It leaves only once every batch this reporter sent before has landed:
        the Ray aggregator is an async actor, which may run two calls from one
        caller out of order, and a run's state drops step progress that
        arrives after its end. The send lock is held throughout, so no batch
        of the sender's can slip in between.
        """
        data = {"error": error} if error else None
        self.last_flush = time.monotonic()
        with self._send_lock:
            self._sync()
            with self._lock:
                self._drain_pending_locked()
                self._outbox.append(self._event(RUN, status=status, data=data))
            self._send_drained()
        self._release_if_clean()

    # -- batching ------------------------------------------------------
    def _drain_pending_locked(self) -> None:
        if self._pending:
            step, attempt = self.step, self.attempt
            self._outbox.extend(
                self._event(PROGRESS, step=step, attempt=attempt, category=cat, current=cur, total=tot)
                for cat, (cur, tot) in self._pending.items()
            )
            self._pending = {}
        if self._shards:
            step, attempt = self.step, self.attempt
            self._outbox.extend(
                self._event(SHARD, step=step, attempt=attempt, category=cat, data=data)
                for cat, data in self._shards.items()
            )
            self._shards = {}
        if self._metrics:
            self._outbox.append(self._event(METRIC, step=self.step, attempt=self.attempt, data=self._metrics))
            self._metrics = {}

    def _drain(self) -> list[ProgressEvent]:
        with self._lock:
            self._drain_pending_locked()
            events, self._outbox = self._outbox, []
            self._dirty = False
        return events

    def flush(self, wait: bool = False) -> None:
        """Send what is pending; with ``wait``, also wait until the sink has folded it in."""
        self._flush()
        if wait:
            self._sync()

    def _sync(self) -> None:
        sync = getattr(self.sink, "sync", None)
        if sync is not None:
            try:
                sync()
            except Exception as exc:  # noqa: BLE001
                _log().warning("progress_sync_failed", error=repr(exc))

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        with self._send_lock:  # drain under the send lock so batches leave in order
            self._send_drained()
        self._release_if_clean()

    def _send_drained(self) -> None:
        """Send what is queued; the caller holds the send lock."""
        events = self._drain()
        if events:
            try:
                self.sink.send(events)
            except Exception as exc:  # noqa: BLE001 - progress must never break a run
                _log().warning("progress_send_failed", error=repr(exc), events=len(events))

    def _release_if_clean(self) -> None:
        with self._lock:  # a mark made after the drain sets _dirty first (under this lock): kept
            if not self._dirty:
                _SENDER.forget(self)  # nothing left to send: the sender holds this run no longer

    def detach(self) -> tuple[list[ProgressEvent], list[Any]]:
        """Leave the sender; hand back the unsent events and the refs of sends still in flight.

        Whoever forwards the events waits on those refs first, so nothing this
        reporter sent can land after what is forwarded (or after a final status).
        """
        self._closed = True  # a detached reporter is never marked for the sender again
        _SENDER.forget(self)
        with self._send_lock:  # a batch the sender is sending leaves first
            events = self._drain()
            take = getattr(self.sink, "take_in_flight", None)
            return events, (take() if take is not None else [])

    def forward(self, events: list[ProgressEvent], wake: bool = True) -> None:
        """Queue events another process collected, in order with this reporter's own.

        They leave with the sender's next batch, or with the next flush; with
        ``wake=False`` the sender is not told (the caller's final status follows
        at once and takes them along in its own batch).
        """
        if not events:
            return
        with self._lock:
            self._drain_pending_locked()
            self._outbox.extend(events)
            if not wake:
                return
            wake, self._dirty = not self._dirty, True
        if wake:
            _SENDER.mark(self)

    def close(self) -> None:
        """Final flush, wait until the sink has it, and leave the sender."""
        self._closed = True
        self.flush(wait=True)


def wait_for_state(sink: LocalSink, version: int, timeout: float) -> int:
    """Block until ``sink.state`` moves past ``version`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    with sink.changed:
        while sink.state.version <= version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sink.changed.wait(remaining)
        return sink.state.version
