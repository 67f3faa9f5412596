"""The Ray-hosted progress aggregator: one actor per driver, one state per run.

Workers send batches of ``ProgressEvent``; the aggregator folds them into a
``ProgressState`` per run, answers snapshots and a long-poll
``wait_for_update``, holds each run's cancel flag, and is the single writer
of a run's backend job record.

One shared actor per driver rather than one per run: creating an actor costs
about 0.8 s here, which would dominate short runs (a trivial task round trip
is about 3 ms); one actor call costs about 1 ms and a batch of 100 events
costs the same as one.

Memory stays bounded in a long-lived driver: finished runs are evicted
oldest-first beyond ``keep_finished``, and a run nobody has reported on for
``abandon_after`` seconds (its driver is gone, or it hangs silently) is
evicted too. A run that is still alive loses nothing it needs: when the
driver finds that the aggregator holds no plan for it (after an eviction or
an actor restart), on its next read or at its final status, it re-seeds the
aggregator from its own copy (``restore``; see ``source.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from synapse_ray.executors.ray.ordering import InOrder, is_final
from synapse_ray.executors.ray.transport import CANCELLED, NEEDS_SEED
from synapse_ray.runtime.progress import ProgressEvent, ProgressSnapshot
from synapse_ray.runtime.progress_state import ProgressState

NAMESPACE = "synapse_ray"


class ProgressAggregator:
    """Plain class; wrapped with ``ray.remote`` by ``get_aggregator``.

    Its methods are ``async`` so a long-poll waiting for an update never
    blocks the pushes that would produce it.
    """

    def __init__(self, keep_finished: int = 256, abandon_after: float = 6 * 3600.0) -> None:
        from synapse_ray.runtime.logging import configure_logging

        configure_logging()  # the job writer's client logs here: our pipeline, on stderr
        self._runs: OrderedDict[str, ProgressState] = OrderedDict()
        self._cancelled: set[str] = set()
        self._changed: dict[str, asyncio.Event] = {}
        self._keep_finished = keep_finished
        self._abandon_after = abandon_after
        self._evicted: OrderedDict[str, None] = OrderedDict()  # bounded: late pushes for these are dropped
        self._writers: dict[str, Any] = {}  # run id -> JobProgressWriter
        self._order = InOrder()  # each process's batches folded in the order it sent them
        self._gap_timer: asyncio.TimerHandle | None = None
        self.events_total = 0

    def _state(self, run_id: str) -> ProgressState:
        state = self._runs.get(run_id)
        if state is None:
            state = self._runs[run_id] = ProgressState(run_id=run_id)
            self._evict()
        return state

    def _forget(self, run_id: str) -> None:
        self._order.forget(run_id)
        self._runs.pop(run_id, None)
        self._changed.pop(run_id, None)
        self._cancelled.discard(run_id)
        writer = self._writers.pop(run_id, None)
        if writer is not None:
            writer.close()
        self._evicted[run_id] = None

    def _evict(self) -> None:
        now = time.time()
        finished = []
        for rid, st in list(self._runs.items()):
            if st.status.is_terminal:
                finished.append(rid)
            elif now - st.updated_at > self._abandon_after:
                self._forget(rid)
        for rid in finished[: max(0, len(finished) - self._keep_finished)]:
            self._forget(rid)
        while len(self._evicted) > 16 * self._keep_finished:
            self._evicted.popitem(last=False)

    def _notify(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    def _fold(self, run_id: str, events: list[ProgressEvent], replay: bool = False) -> ProgressState:
        state = self._state(run_id)
        state.apply(events)
        writer = self._writers.get(run_id)
        if writer is not None:  # a replayed state's log entries were sent when they first came
            writer.offer(state.snapshot(), None if replay else events)
        self.events_total += len(events)
        self._notify(run_id)
        return state

    async def push(
        self, run_id: str, events: list[ProgressEvent], sender: str | None = None, seq: int = 0
    ) -> int:
        """Fold a batch in (a numbered one in its sender's order, see ``ordering``).

        Answers flags: the cancel flag, and whether the run needs re-seeding."""
        if run_id in self._evicted:
            return NEEDS_SEED  # a straggler for a run dropped here: only its driver can restore it
        last = is_final(events)
        ready = [events] if sender is None else self._order.arrive(run_id, sender, seq, events, last)
        for batch in ready:
            self._fold(run_id, batch)
        if self._order.waiting() and self._gap_timer is None:
            self._gap_timer = asyncio.get_running_loop().call_later(self._order.gap_s, self._give_up_gaps)
        state = self._state(run_id)
        flags = CANCELLED if run_id in self._cancelled else 0
        if state.status.is_terminal and not state.plan.steps:
            flags |= NEEDS_SEED  # a final status for a run whose plan this actor never saw
        return flags

    def _give_up_gaps(self) -> None:
        """Fold what waited ``gap_s`` for a batch that never came; look again while any waits."""
        self._gap_timer = None
        for run_id, batches in self._order.overdue():
            if run_id not in self._evicted:
                for batch in batches:
                    self._fold(run_id, batch)
        if self._order.waiting():
            self._gap_timer = asyncio.get_running_loop().call_later(self._order.gap_s / 4, self._give_up_gaps)

    async def restore(
        self,
        run_id: str,
        events: list[ProgressEvent],
        cancelled: bool,
        backend: Any = None,
        job_id: int | str | None = None,
    ) -> None:
        """Replace what this actor holds for a run with its driver's copy.

        Used after a restart or an eviction lost the run's plan; what workers
        pushed since then is dropped in favour of the driver's view.
        """
        self._evicted.pop(run_id, None)
        self._runs.pop(run_id, None)
        if cancelled:
            self._cancelled.add(run_id)
        if job_id is not None and run_id not in self._writers:
            await self.attach_job(run_id, backend, job_id)
        self._fold(run_id, events, replay=True)

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

    async def wait_final_record(self, run_id: str, timeout: float) -> bool:
        """Wait until the run's final job record is written (True also when it has no job)."""
        writer = self._writers.get(run_id)
        if writer is None:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(None, writer.wait_final, timeout)
        if ok:
            self._writers.pop(run_id, None)
        return bool(ok)

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
        return {
            "runs": len(self._runs),
            "writers": len(self._writers),
            "events_total": self.events_total,
            "waiting": self._order.waiting(),
        }

    async def ping(self) -> bool:
        return True


_handles: dict[tuple[str, str], tuple[str, Any]] = {}
_incarnation: dict[tuple[str, str], int] = {}


def _key() -> tuple[str, str]:
    import ray

    rc = ray.get_runtime_context()
    return rc.gcs_address, rc.get_job_id()


def get_aggregator() -> tuple[str, Any]:
    """This driver's aggregator actor, created on first use: ``(name, handle)``.

    0 CPUs, so it never blocks scheduling; placed on the driver's node, so
    losing a worker node never loses the run's progress state. The handle is
    kept for the life of the driver: a named actor whose last handle goes
    away is collected by Ray, state and all. Ray restarts it if its process
    dies (``max_restarts=-1``; drivers re-seed what it lost). If it was
    killed for good, ``forget_aggregator`` lets the next run make a new one
    under a new name, so workers never reach a stale cached handle.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    key = _key()
    if key in _handles:
        return _handles[key]
    name = f"progress-{key[1]}-{_incarnation.get(key, 0)}"
    actor_cls = ray.remote(ProgressAggregator)
    handle = actor_cls.options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        ),
    ).remote()
    _handles[key] = (name, handle)
    return _handles[key]


def forget_aggregator(name: str) -> None:
    """The aggregator named ``name`` is gone for good: the next run gets a new one."""
    for key, (current, _) in list(_handles.items()):
        if current == name:
            del _handles[key]
            _incarnation[key] = _incarnation.get(key, 0) + 1
