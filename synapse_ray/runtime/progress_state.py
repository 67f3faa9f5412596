"""The pure progress state machine shared by the local sink and the Ray aggregator.

Memory is bounded by the plan (steps, categories, workers, a short warning and
log tail), never by the number of events folded in.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from synapse_ray.runtime.progress import (
    LOG,
    METRIC,
    PLAN,
    PROGRESS,
    RUN,
    SHARD,
    STEP,
    WARN,
    CategoryProgress,
    ProgressEvent,
    ProgressPlan,
    ProgressSnapshot,
    ShardCounts,
    StepProgress,
)
from synapse_ray.runtime.run_log import tail_view
from synapse_ray.runtime.shard_progress import ShardTally
from synapse_ray.runtime.status import RunStatus, StepStatus

MAX_TAIL = 50


@dataclass(slots=True)
class _StepState:
    weight: float
    category_weights: dict[str, float] | None
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    fraction: float = 0.0
    error: str | None = None
    seen: set[str] = field(default_factory=set)


class ProgressState:
    """Folds progress events into per-step, per-category and overall progress."""

    def __init__(self, plan: ProgressPlan | None = None, run_id: str = "") -> None:
        self.run_id = run_id
        self.plan = plan or ProgressPlan(())
        self.version = 0
        self.status = RunStatus.PENDING
        self.error: str | None = None
        self.current_step: str | None = None
        self.run_attempt = 1
        self.updated_at = time.time()
        self._steps: dict[str, _StepState] = {}
        self._shards: dict[str, ShardTally] = {}  # map_shards fan-outs, by progress category
        self._set_plan(self.plan)
        self._categories: dict[str, tuple[float, float]] = {}
        self._category_ts: dict[str, float] = {}
        self._metrics: dict[str, Any] = {}
        self._workers: dict[str, str] = {}
        self._overall = 0.0
        self.warnings: deque[str] = deque(maxlen=MAX_TAIL)
        self.logs: deque[dict[str, Any]] = deque(maxlen=MAX_TAIL)

    # -- folding -------------------------------------------------------
    def apply(self, events: list[ProgressEvent] | tuple[ProgressEvent, ...]) -> int:
        """Fold a batch in; returns the new version (bumped once per batch)."""
        if not events:
            return self.version
        for ev in events:
            kind = ev.kind
            if kind in (PROGRESS, STEP, PLAN, SHARD):
                if self.status.is_terminal or ev.run_attempt < self.run_attempt:
                    continue  # a straggler from a worker after the run (or its attempt) ended
                if ev.run_attempt > self.run_attempt:
                    self._new_run_attempt(ev.run_attempt)
            if kind == PROGRESS:
                self._on_progress(ev)
            elif kind == STEP:
                self._on_step(ev)
            elif kind == SHARD:
                self._on_shard(ev)
            elif kind == RUN:
                self._on_run(ev)
            elif kind == METRIC:
                if ev.data:
                    self._metrics.update(ev.data)
            elif kind == PLAN:
                if ev.data:
                    self._set_plan(ProgressPlan.from_data(ev.data))
            elif kind == LOG:
                self.logs.append(tail_view(ev.data or {}))
            elif kind == WARN:
                self._warn(str((ev.data or {}).get("message", "")))
            if ev.worker:
                self._workers[ev.worker] = ev.step or ""
        self._overall = max(self._overall, self._compute_overall())
        self.version += 1
        self.updated_at = time.time()
        return self.version

    def _new_run_attempt(self, run_attempt: int) -> None:
        """The whole run is tried again (its worker died): every step starts over."""
        self.run_attempt = run_attempt
        self._set_plan(self.plan)
        self._shards.clear()
        self._warn(f"run attempt {run_attempt}: the previous attempt's worker died; starting over")

    def _set_plan(self, plan: ProgressPlan) -> None:
        self.plan = plan
        self._steps = {
            s.name: _StepState(s.weight, dict(s.category_weights) if s.category_weights else None)
            for s in plan.steps
        }

    def _on_progress(self, ev: ProgressEvent) -> None:
        cat = ev.category or "default"
        total = ev.total
        current = ev.current
        if ev.ts < self._category_ts.get(cat, 0.0):
            return  # an older batch that arrived late: the newer value stands
        self._category_ts[cat] = ev.ts
        self._categories[cat] = (current, total)
        st = self._steps.get(ev.step) if ev.step else None
        if st is None or ev.attempt < st.attempt:
            return  # late event from an older attempt: the category is kept, the step not
        if ev.attempt > st.attempt:
            self._restart(st, ev.attempt)
        st.seen.add(cat)
        if st.category_weights is None and total > 0:
            st.fraction = max(st.fraction, min(1.0, current / total))

    def _on_shard(self, ev: ProgressEvent) -> None:
        """A fan-out's counts or one shard's fraction; the category holds the weighted sum."""
        data = ev.data or {}
        cat = ev.category or "shards"
        st = self._steps.get(ev.step) if ev.step else None
        if st is not None and ev.attempt < st.attempt:
            return  # from an older attempt of the step
        tally = self._shards.get(cat)
        if tally is None or tally.map_id != data.get("map"):
            if tally is not None and "counts" not in data and not tally.closed:
                return  # a straggler of an earlier fan-out while this one runs
            tally = self._shards[cat] = ShardTally(data.get("map"), ev.step, ev.attempt)
        tally.apply(data)
        current, total = tally.value()
        if total <= 0:
            return
        self._categories[cat] = (current, total)
        if st is None:
            return
        if ev.attempt > st.attempt:
            self._restart(st, ev.attempt)
        st.seen.add(cat)
        if st.category_weights is None:
            st.fraction = max(st.fraction, min(1.0, current / total))

    def _on_step(self, ev: ProgressEvent) -> None:
        st = self._steps.get(ev.step or "")
        if st is None:
            return
        if ev.attempt < st.attempt:
            return
        status = StepStatus(ev.status) if ev.status else StepStatus.RUNNING
        if status is StepStatus.RUNNING and ev.attempt == st.attempt and st.status is not StepStatus.PENDING:
            return  # a late "running" never reopens a step this attempt already ended
        if ev.attempt > st.attempt:
            self._restart(st, ev.attempt)
        st.status = status
        if status is StepStatus.RUNNING:
            self.current_step = ev.step
            if self.status is RunStatus.PENDING:
                self.status = RunStatus.RUNNING
        elif status.is_finished:
            st.fraction = 1.0
            st.error = None
        if ev.data and "error" in ev.data:
            st.error = str(ev.data["error"])

    def _on_run(self, ev: ProgressEvent) -> None:
        status = RunStatus(ev.status) if ev.status else RunStatus.RUNNING
        if self.status.is_terminal:
            return
        self.status = status
        if ev.data and ev.data.get("error"):
            self.error = str(ev.data["error"])
        if status is RunStatus.SUCCEEDED:
            for st in self._steps.values():
                if st.status in (StepStatus.PENDING, StepStatus.RUNNING):
                    st.status = StepStatus.SUCCEEDED
                    st.fraction = 1.0
            self.current_step = None
        elif status.is_terminal:
            self.current_step = None

    @staticmethod
    def _restart(st: _StepState, attempt: int) -> None:
        st.attempt = attempt
        st.fraction = 0.0
        st.seen.clear()
        st.error = None

    def _warn(self, message: str) -> bool:
        if message and message not in self.warnings:
            self.warnings.append(message)
            return True
        return False

    def add_warning(self, message: str) -> None:
        """A warning from outside the event stream (it bumps the version itself)."""
        if self._warn(message):
            self.version += 1

    # -- reading -------------------------------------------------------
    def _step_fraction(self, st: _StepState) -> float:
        if st.status.is_finished:
            return 1.0
        if st.category_weights is not None:
            frac = 0.0
            for cat, w in st.category_weights.items():
                cur, tot = self._categories.get(cat, (0.0, 0.0))
                if tot > 0:
                    frac += w * min(1.0, cur / tot)
            st.fraction = max(st.fraction, frac)
        return st.fraction

    def _compute_overall(self) -> float:
        if self.status is RunStatus.SUCCEEDED:
            return 100.0
        total = 0.0
        for st in self._steps.values():
            total += st.weight * self._step_fraction(st)
        return min(100.0, 100.0 * total)

    @property
    def overall(self) -> float:
        return self._overall

    def snapshot(self) -> ProgressSnapshot:
        steps = {
            name: StepProgress(
                percent=round(100.0 * self._step_fraction(st), 4),
                status=st.status,
                attempt=st.attempt,
                weight=st.weight,
                error=st.error,
            )
            for name, st in self._steps.items()
        }
        return ProgressSnapshot(
            run_id=self.run_id,
            status=self.status,
            overall=round(self._overall, 4),
            current_step=self.current_step,
            steps=steps,
            categories={
                c: CategoryProgress(current=cur, total=tot) for c, (cur, tot) in self._categories.items()
            },
            shards={
                c: ShardCounts(step=t.step, total=t.total, percent=t.percent(), **t.counts)
                for c, t in self._shards.items()
            },
            metrics=dict(self._metrics),
            workers=dict(self._workers),
            warnings=list(self.warnings),
            error=self.error,
            run_attempt=self.run_attempt,
            version=self.version,
            updated_at=self.updated_at,
        )

    def to_events(self) -> list[ProgressEvent]:
        """Events that rebuild this state in a fresh holder (an aggregator that lost it)."""
        ra = self.run_attempt
        events = [ProgressEvent(PLAN, data=self.plan.to_data(), run_attempt=ra)]
        for name, st in self._steps.items():
            if st.status is not StepStatus.PENDING:
                data = {"error": st.error} if st.error else None
                events.append(
                    ProgressEvent(STEP, name, st.attempt, status=st.status.value, data=data, run_attempt=ra)
                )
        owner = {cat: (name, st.attempt) for name, st in self._steps.items() for cat in st.seen}
        for cat, (cur, tot) in self._categories.items():
            ts = self._category_ts.get(cat, 0.0)
            step, attempt = owner.get(cat, (None, 1))  # a running step's percent comes from these
            events.append(ProgressEvent(PROGRESS, step, attempt, cat, cur, tot, ts=ts, run_attempt=ra))
        events.extend(
            ProgressEvent(SHARD, t.step, t.attempt, cat, data=t.counts_data(), run_attempt=ra)
            for cat, t in self._shards.items()
        )
        if self._metrics:
            events.append(ProgressEvent(METRIC, data=dict(self._metrics), run_attempt=ra))
        events.extend(ProgressEvent(WARN, data={"message": w}, run_attempt=ra) for w in self.warnings)
        events.extend(ProgressEvent(LOG, data=entry, run_attempt=ra) for entry in self.logs)
        if self.status is not RunStatus.PENDING:
            data = {"error": self.error} if self.error else None
            events.append(ProgressEvent(RUN, status=self.status.value, data=data, run_attempt=ra))
        return events
