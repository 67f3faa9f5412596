"""Progress and cancel transport over the aggregator actor.

Both are values that name the aggregator actor, so they travel inside a
pickled ``RuntimeContext`` to any task or actor and keep working there. They
carry the actor's *name*, not its handle: serializing an actor handle costs
about as much as a trivial task, and a worker process (reused across tasks)
looks the name up once and keeps the handle.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from synapse_ray.executors.ray.ordering import is_final, next_seq
from synapse_ray.runtime.progress import ProgressEvent
from synapse_ray.runtime.progress_state import ProgressState

MAX_IN_FLIGHT = 16
CALL_TIMEOUT = 10.0  # every blocking call to the aggregator is bounded
COPY_FOLD_AT = 256  # a task's copy of what it sent is folded at this many events

# Flags the aggregator's ``push`` answers with.
CANCELLED = 1
NEEDS_SEED = 2  # the aggregator holds no plan for the run: it restarted, or evicted the run

_handles: dict[str, Any] = {}
_handles_lock = threading.Lock()


class AggregatorRef:
    """The aggregator by name; ``handle`` resolves it once per process."""

    def __init__(self, name: str, namespace: str, handle: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        if handle is not None:  # the creator's live handle wins over anything cached before
            with _handles_lock:
                _handles[self._key] = handle

    @property
    def _key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def handle(self) -> Any:
        handle = _handles.get(self._key)
        if handle is None:
            import ray

            with _handles_lock:
                handle = _handles.get(self._key)
                if handle is None:
                    handle = _handles[self._key] = ray.get_actor(self.name, namespace=self.namespace)
        return handle

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.namespace = state["name"], state["namespace"]


class RaySink:
    """Sends batches with fire-and-forget actor calls; ``sync`` waits for them.

    On the driver it also folds what it sends into ``mirror``: the driver's
    own copy of the run (plan, step ends, final tails, run status; in task
    mode, what the task sent, returned with its result). When the aggregator
    is lost, the handle reads the mirror and re-seeds a fresh aggregator from
    it. The mirror does not travel: a task's worker keeps what it sends instead.
    """

    def __init__(self, aggregator: AggregatorRef, run_id: str, mirror: bool = False) -> None:
        self.aggregator = aggregator
        self.run_id = run_id
        self.mirror = ProgressState(run_id=run_id) if mirror else None
        # (ref, its future): the future says whether the batch landed without a Ray
        # call. A ``ray.wait`` at the end of a task, and dropping the refs it handled,
        # took about 0.8 ms after a 1 s task on an idle VM, against microseconds warm.
        self._in_flight: list[tuple[Any, Future[Any]]] = []
        self._lock = threading.Lock()  # the sender thread and the caller both touch _in_flight
        self._sent: list[ProgressEvent] | None = None  # see keep_copy
        self._sent_folded: ProgressState | None = None

    def send(self, events: list[ProgressEvent]) -> None:
        if self.mirror is not None or self._sent is not None:
            with self._lock:  # kept before the push: a dead aggregator refuses it
                if self.mirror is not None:
                    self.mirror.apply(events)
                if self._sent is not None:
                    self._sent.extend(events)
                    if len(self._sent) >= COPY_FOLD_AT:
                        self._fold_sent()
        sender, seq = next_seq(self.run_id, last=is_final(events))  # the aggregator folds them in this order
        _released.clear()
        ref = self.aggregator.handle.push.remote(self.run_id, events, sender, seq)
        landed = ref.future()
        with self._lock:
            self._in_flight.append((ref, landed))
            if len(self._in_flight) > MAX_IN_FLIGHT:  # forget the ones that landed
                self._in_flight = [(r, f) for r, f in self._in_flight if not f.done()]

    def take_in_flight(self) -> list[Any]:
        """Hand over the refs of batches not yet known to have landed (to wait on elsewhere).

        Refs that have landed are dropped here: the receiver would only pay a
        round trip per ref to learn that.
        """
        with self._lock:
            pairs, self._in_flight = self._in_flight, []
        _release_later(pairs)
        return [ref for ref, landed in pairs if not landed.done()]

    def all_landed(self) -> bool:
        """Whether every batch sent so far has been folded in (no Ray call: their futures)."""
        with self._lock:
            return all(landed.done() for _, landed in self._in_flight)

    def sync(self, timeout: float = CALL_TIMEOUT) -> int:
        """Block until every batch sent so far has been folded in; the OR of their flags.

        A failed batch raises here, as Ray's error (the caller maps it)."""
        import ray

        with self._lock:
            pairs, self._in_flight = self._in_flight, []
        flags = 0
        waiting = []
        for ref, landed in pairs:
            if landed.done() and landed.exception() is None:
                flags |= int(landed.result())
            else:
                waiting.append(ref)  # a failed one raises from ray.get, as Ray's error
        for flag in ray.get(waiting, timeout=timeout) if waiting else ():
            flags |= int(flag)
        return flags

    def keep_copy(self) -> None:
        """Keep what this sink sends (a task's worker: the driver's copy then gets the whole
        run back with the result, see ``absorb``). Kept as sent, folded only every
        ``COPY_FOLD_AT`` events: a short task hands back a few events without running the
        fold's code, which after a long ``execute`` costs by the cold memory it touches."""
        if self._sent is None:
            self._sent = []

    def take_sent(self) -> list[ProgressEvent]:
        """Everything sent since ``keep_copy`` or the last take, as few events as rebuild it;
        the copy starts again (a reused step actor hands back each step's own)."""
        with self._lock:
            if self._sent is None:
                return []
            if self._sent_folded is None:
                events = self._sent
            else:
                self._fold_sent()
                events = self._sent_folded.to_events()
            self._sent, self._sent_folded = [], None
            return events

    def _fold_sent(self) -> None:
        if self._sent_folded is None:
            self._sent_folded = ProgressState(run_id=self.run_id)
        self._sent_folded.apply(self._sent or [])
        self._sent = []

    def absorb(self, events: list[ProgressEvent]) -> None:
        """Fold into the copy events that reached the aggregator from another process (what
        a task sent itself): with them the copy can rebuild or replace a lost aggregator's
        state. Nothing is sent."""
        if self.mirror is not None and events:
            with self._lock:
                self.mirror.apply(events)

    def mirror_snapshot(self) -> Any:
        if self.mirror is None:
            return None
        with self._lock:
            return self.mirror.snapshot()

    def mirror_logs(self) -> tuple[bool, list[dict[str, Any]]] | None:
        """``(finished, log entries)`` of the driver's copy; None without one."""
        if self.mirror is None:
            return None
        with self._lock:
            return self.mirror.status.is_terminal, list(self.mirror.logs)

    def mirror_events(self) -> list[ProgressEvent]:
        if self.mirror is None:
            return []
        with self._lock:
            return self.mirror.to_events()

    def __getstate__(self) -> dict[str, Any]:
        return {"aggregator": self.aggregator, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["aggregator"], state["run_id"])  # type: ignore[misc]


# Refs a finished task or step handed over, dropped at this process's next send.
# Dropping an ObjectRef waits on Ray's reference counter: 0.7 ms at the end of a
# 1 s task on an idle VM, on the way back to the caller. Every non-empty list
# here follows a send of its own, so it holds what the runs since the last
# send sent: a few refs.
_released: list[Any] = []


def _release_later(pairs: list[Any]) -> None:
    if pairs:
        _released.append(pairs)


class AggregatorCancelSource:
    """Asks the aggregator whether the run was cancelled, at most every ``interval`` s."""

    def __init__(self, aggregator: AggregatorRef, run_id: str, interval: float = 0.25) -> None:
        self.aggregator = aggregator
        self.run_id = run_id
        self.interval = interval
        # The first look is one interval after arrival: a run cancelled in its first
        # moments is still seen within ``interval``, and short tasks pay no round trip.
        self._checked = time.monotonic()
        self._value = False

    def is_cancelled(self) -> bool:
        if self._value:
            return True
        now = time.monotonic()
        if now - self._checked >= self.interval:
            import ray

            self._checked = now
            ref = self.aggregator.handle.is_cancelled.remote(self.run_id)
            self._value = bool(ray.get(ref, timeout=CALL_TIMEOUT))
        return self._value

    def __getstate__(self) -> dict[str, Any]:
        return {"aggregator": self.aggregator, "run_id": self.run_id, "interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
