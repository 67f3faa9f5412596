"""The Ray-hosted progress aggregator: one actor per driver, one state per run.

Workers send batches of ``ProgressEvent``; the aggregator folds them into a
``ProgressState`` per run (memory bounded by the plan), answers snapshots and
a long-poll ``wait_for_update``, and holds each run's cancel flag.

One shared actor per driver rather than one per run: creating an actor costs
about 0.8 s here, which would dominate short runs (a trivial task round trip
is about 3 ms); one actor call costs about 1 ms and a batch of 100 events
costs the same as one. Finished runs are evicted oldest-first beyond
``keep_finished`` so a long-lived driver does not grow without bound.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from synapse_ray.runtime.progress import ProgressEvent, ProgressSnapshot
from synapse_ray.runtime.progress_state import ProgressState

NAMESPACE = "synapse_ray"


class ProgressAggregator:
    """Plain class; wrapped with ``ray.remote`` by ``get_aggregator``.

    Its methods are ``async`` so a long-poll waiting for an update never
    blocks the pushes that would produce it.
    """

    def __init__(self, keep_finished: int = 256) -> None:
        self._runs: OrderedDict[str, ProgressState] = OrderedDict()
        self._cancelled: set[str] = set()
        self._changed: dict[str, asyncio.Event] = {}
        self._keep_finished = keep_finished
        self._evicted: OrderedDict[str, None] = OrderedDict()  # bounded: late pushes for these are dropped
        self._writers: dict[str, Any] = {}  # run id -> JobProgressWriter
        self.events_total = 0

    def _state(self, run_id: str) -> ProgressState:
        state = self._runs.get(run_id)
        if state is None:
            state = self._runs[run_id] = ProgressState(run_id=run_id)
            self._evict()
        return state

    def _evict(self) -> None:
        finished = [rid for rid, st in self._runs.items() if st.status.is_terminal]
        for rid in finished[: max(0, len(finished) - self._keep_finished)]:
            self._runs.pop(rid, None)
            self._changed.pop(rid, None)
            self._cancelled.discard(rid)
            self._writers.pop(rid, None)
            self._evicted[rid] = None
        while len(self._evicted) > 16 * self._keep_finished:
            self._evicted.popitem(last=False)

    def _notify(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    async def push(self, run_id: str, events: list[ProgressEvent]) -> bool:
        """Fold a batch in. Returns the run's cancel flag (free for the caller)."""
        if run_id in self._evicted:
            return False  # a straggler for a run already finished and dropped
        state = self._state(run_id)
        state.apply(events)
        writer = self._writers.get(run_id)
        if writer is not None:
            writer.offer(state.snapshot())
            if state.status.is_terminal:
                self._writers.pop(run_id, None)
        self.events_total += len(events)
        self._notify(run_id)
        return run_id in self._cancelled

    def _read(self, run_id: str) -> ProgressSnapshot:
        """Reads never create state: an unknown (or evicted) run reads as an empty snapshot."""
        state = self._runs.get(run_id)
        return state.snapshot() if state is not None else ProgressSnapshot(run_id=run_id)

    async def attach_job(self, run_id: str, backend: Any, job_id: int | str) -> None:
        """Make this actor the writer of the run's progress to its backend job record."""
        from synapse_ray.runtime.job_writer import JobProgressWriter

        self._writers[run_id] = JobProgressWriter(backend, job_id)
        state = self._runs.get(run_id)
        if state is not None:
            self._writers[run_id].offer(state.snapshot())

    async def snapshot(self, run_id: str) -> ProgressSnapshot:
        return self._read(run_id)

    async def wait_for_update(self, run_id: str, version: int, timeout: float) -> ProgressSnapshot:
        state = self._runs.get(run_id)
        if state is None or (state.version <= version and not state.status.is_terminal):
            event = self._changed.setdefault(run_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                if run_id not in self._runs:
                    self._changed.pop(run_id, None)
        return self._read(run_id)

    async def cancel(self, run_id: str) -> None:
        self._cancelled.add(run_id)
        state = self._runs.get(run_id)
        if state is not None:
            state.add_warning("cancel requested")
        self._notify(run_id)

    async def is_cancelled(self, run_id: str) -> bool:
        return run_id in self._cancelled

    async def logs(self, run_id: str) -> list[dict[str, Any]]:
        state = self._runs.get(run_id)
        return list(state.logs) if state is not None else []

    async def stats(self) -> dict[str, int]:
        return {"runs": len(self._runs), "events_total": self.events_total}

    async def ping(self) -> bool:
        return True


_handles: dict[tuple[str, str], Any] = {}


def aggregator_name() -> str:
    import ray

    return f"progress-{ray.get_runtime_context().get_job_id()}"


def get_aggregator() -> Any:
    """Get or create this driver's aggregator actor.

    0 CPUs, so it never blocks scheduling; placed on the driver's node, so
    losing a worker node never loses the run's progress state. The handle is
    kept for the life of the driver: a named actor whose last handle goes
    away is collected by Ray, state and all.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    rc = ray.get_runtime_context()
    key = (rc.gcs_address, rc.get_job_id())
    if key in _handles:
        return _handles[key]
    here = rc.get_node_id()
    name = aggregator_name()
    actor_cls = ray.remote(ProgressAggregator)
    _handles[key] = actor_cls.options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote()
    return _handles[key]
