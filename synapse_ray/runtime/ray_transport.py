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
from typing import Any

from synapse_ray.runtime.progress import ProgressEvent

MAX_IN_FLIGHT = 16

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
    """Sends batches with fire-and-forget actor calls; ``sync`` waits for them."""

    def __init__(self, aggregator: AggregatorRef, run_id: str) -> None:
        self.aggregator = aggregator
        self.run_id = run_id
        self._in_flight: list[Any] = []
        self._lock = threading.Lock()  # the sender thread and the caller both touch _in_flight

    def send(self, events: list[ProgressEvent]) -> None:
        import ray

        ref = self.aggregator.handle.push.remote(self.run_id, events)
        with self._lock:
            self._in_flight.append(ref)
            if len(self._in_flight) > MAX_IN_FLIGHT:  # forget the ones that landed
                _, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=0)

    def take_in_flight(self) -> list[Any]:
        """Hand over the refs of batches not yet known to have landed (to wait on elsewhere)."""
        with self._lock:
            refs, self._in_flight = self._in_flight, []
        return refs

    def sync(self, timeout: float = 10.0) -> None:
        """Block until every batch sent so far has been folded in."""
        import ray

        refs = self.take_in_flight()
        if refs:
            ray.get(refs, timeout=timeout)

    def __getstate__(self) -> dict[str, Any]:
        return {"aggregator": self.aggregator, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["aggregator"], state["run_id"])  # type: ignore[misc]


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
            self._value = bool(ray.get(self.aggregator.handle.is_cancelled.remote(self.run_id), timeout=5))
        return self._value

    def __getstate__(self) -> dict[str, Any]:
        return {"aggregator": self.aggregator, "run_id": self.run_id, "interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
