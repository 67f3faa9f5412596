from __future__ import annotations

import pickle
import threading

import pytest
from ray import cloudpickle

from synapse_ray import ConfigurationError, RunStatus, StepStatus
from synapse_ray.runtime.progress import (
    PROGRESS,
    STEP,
    ProgressEvent,
    ProgressPlan,
    ProgressSnapshot,
)
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, ProgressReporter


def ev(kind, step=None, attempt=1, **kw):
    return ProgressEvent(kind, step, attempt, **kw)


def test_plan_normalizes_weights_and_handles_all_zero():
    plan = ProgressPlan.from_weights([("a", 1), ("b", 3)])
    assert [s.weight for s in plan.steps] == [0.25, 0.75]
    zero = ProgressPlan.from_weights([("a", 0), ("b", 0)])
    assert [s.weight for s in zero.steps] == [0.5, 0.5]
    with pytest.raises(ConfigurationError, match="Step 'a': progress_weight must be a number >= 0"):
        ProgressPlan.from_weights([("a", -1)])
    assert ProgressPlan.from_data(plan.to_data()) == plan


def test_overall_is_weighted_and_never_decreases_across_a_retry():
    state = ProgressState(ProgressPlan.from_weights([("load", 1), ("train", 3)]))
    state.apply(
        [ev(STEP, "load", status="running"), ev(PROGRESS, "load", category="dataset", current=1, total=2)]
    )
    assert state.overall == pytest.approx(12.5)
    state.apply([ev(STEP, "load", status="succeeded"), ev(STEP, "train", status="running")])
    state.apply([ev(PROGRESS, "train", category="train", current=50, total=100)])
    assert state.overall == pytest.approx(25 + 37.5)
    # the train step fails and is retried: its own percent restarts, overall holds
    state.apply([ev(STEP, "train", status="failed"), ev(STEP, "train", 2, status="running")])
    state.apply([ev(PROGRESS, "train", 2, category="train", current=10, total=100)])
    snap = state.snapshot()
    assert snap.steps["train"].attempt == 2
    assert snap.steps["train"].percent == pytest.approx(10.0)
    assert snap.overall == pytest.approx(62.5)
    # late events from the old attempt do not move the step back
    state.apply([ev(PROGRESS, "train", 1, category="train", current=90, total=100)])
    assert state.snapshot().steps["train"].percent == pytest.approx(10.0)


def test_category_weights_for_simple_actions():
    plan = ProgressPlan.single("execute", {"dataset": 1, "train": 3})
    state = ProgressState(plan)
    state.apply(
        [
            ev(STEP, "execute", status="running"),
            ev(PROGRESS, "execute", category="dataset", current=5, total=5),
        ]
    )
    assert state.overall == pytest.approx(25.0)
    state.apply([ev(PROGRESS, "execute", category="train", current=1, total=3)])
    assert state.overall == pytest.approx(50.0)
    snap = state.snapshot()
    assert snap.categories["dataset"].current == 5 and snap.categories["train"].total == 3
    assert snap.categories["train"].percent == pytest.approx(100 / 3)


def test_run_success_reaches_100_and_snapshot_round_trips():
    state = ProgressState(ProgressPlan.from_weights([("a", 1)]), run_id="r1")
    state.apply([ev("run", status="RUNNING"), ev(STEP, "a", status="running")])
    state.apply([ev("run", status="SUCCEEDED")])
    snap = state.snapshot()
    assert snap.overall == 100.0 and snap.status is RunStatus.SUCCEEDED
    assert snap.steps["a"].status is StepStatus.SUCCEEDED
    again = ProgressSnapshot.model_validate_json(snap.model_dump_json())
    assert again == snap


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_events_pickle_with_every_field(dumps):
    event = ProgressEvent(
        "shard",
        step="prep",
        attempt=3,
        category="decode",
        current=4.0,
        total=9.0,
        status="running",
        worker="node:12",
        ts=123.5,
        data={"map": "m1", "counts": {"done": 4}},
        run_attempt=2,
    )
    again = pickle.loads(dumps(event))
    assert again == event and type(again) is ProgressEvent
    defaults = ProgressEvent("run")
    assert pickle.loads(dumps(defaults)) == defaults  # the creation time travels, not a new one


def test_memory_is_bounded_by_plan_not_events():
    state = ProgressState(ProgressPlan.from_weights([("a", 1)]))
    for i in range(2000):
        state.apply([ev(PROGRESS, "a", category=f"c{i % 3}", current=i, total=2000, worker=f"w{i % 2}")])
    snap = state.snapshot()
    assert len(snap.categories) == 3 and len(snap.workers) == 2
    assert state.version == 2000


def test_reporter_coalesces_updates_into_few_batches():
    batches: list[list[ProgressEvent]] = []
    done = threading.Event()

    class Sink:
        def send(self, events):
            batches.append(events)
            if any(e.current == 9999 for e in events):
                done.set()

    reporter = ProgressReporter(Sink(), interval=0.05)
    for i in range(10000):
        reporter.update("train", i, 9999)
    assert done.wait(5), "the sender thread never flushed"
    reporter.close()
    sent = [e for b in batches for e in b]
    assert len(sent) < 50  # 10,000 updates coalesced
    assert sent[-1].current == 9999 and sent[-1].category == "train"


class _SendingThreads:
    """A sink that records which thread sent each batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[ProgressEvent]]] = []
        self.arrived = threading.Event()

    def send(self, events: list[ProgressEvent]) -> None:
        self.batches.append((threading.current_thread().name, events))
        self.arrived.set()


def test_step_ends_flush_at_once_by_default():
    sink = _SendingThreads()
    reporter = ProgressReporter(sink, interval=30.0)  # the interval alone would hold them 30 s
    reporter.begin_step("train")
    reporter.end_step(StepStatus.SUCCEEDED.value)
    assert [name for name, _ in sink.batches] == [threading.current_thread().name]  # before it returned
    sent = [e for _, batch in sink.batches for e in batch]
    assert [(e.kind, e.status) for e in sent] == [(STEP, "running"), (STEP, "succeeded")]


def test_step_ends_not_flushed_leave_with_the_senders_next_batch():
    sink = _SendingThreads()
    reporter = ProgressReporter(sink, interval=1.0)
    reporter.flush_step_events = False
    reporter.begin_step("train")
    reporter.end_step(StepStatus.SUCCEEDED.value)
    assert sink.batches == []  # the caller sent nothing
    assert sink.arrived.wait(5), "the sender never sent the step end"
    assert [name for name, _ in sink.batches] == ["synapse-ray-progress"]
    sent = [e for _, batch in sink.batches for e in batch]
    assert [(e.kind, e.status) for e in sent] == [(STEP, "running"), (STEP, "succeeded")]


def test_step_ends_not_flushed_are_handed_back_by_detach():
    sink = _SendingThreads()
    reporter = ProgressReporter(sink, interval=30.0)
    reporter.flush_step_events = False
    reporter.begin_step("train")
    reporter.end_step(StepStatus.SUCCEEDED.value)
    events, in_flight = reporter.detach()
    assert [e.status for e in events] == ["running", "succeeded"] and in_flight == []
    assert sink.batches == []


def test_a_step_that_ended_well_does_not_wake_the_sender_where_step_events_are_not_flushed():
    """Its end leaves with the next send (here: detach, as at a Ray task's end); a
    failed step's end is sent by the sender thread on its own."""
    from synapse_ray.runtime.sender import SENDER

    sink = _SendingThreads()
    reporter = ProgressReporter(sink, interval=0.05)
    reporter.flush_step_events = False
    reporter.begin_step("a")
    assert sink.arrived.wait(5), "the sender never sent the step start"
    sink.arrived.clear()
    reporter.end_step(StepStatus.SUCCEEDED.value)
    assert reporter not in SENDER._dirty.values()  # not marked: nothing will wake the sender
    assert not sink.arrived.wait(0.3)  # six intervals: still unsent
    events, _ = reporter.detach()
    assert [(e.kind, e.step, e.status) for e in events] == [(STEP, "a", "succeeded")]

    failing = ProgressReporter(sink, interval=0.05)
    failing.flush_step_events = False
    failing.begin_step("b")
    failing.end_step(StepStatus.FAILED.value, "boom")
    assert sink.arrived.wait(5), "the sender never sent the failed step's end"
    sent = [e for _, batch in sink.batches for e in batch if e.step == "b"]
    assert [e.status for e in sent] == ["running", "failed"]
    assert {name for name, _ in sink.batches} == {"synapse-ray-progress"}
    failing.close()


def test_clamping_warns_once_and_never_raises(caplog):
    state = ProgressState(ProgressPlan.from_weights([("a", 1)]))
    sink = LocalSink(state)
    reporter = ProgressReporter(sink)
    reporter.begin_step("a", 1)
    reporter.update("train", -5, 10)
    reporter.update("train", 15, 10)
    reporter.update("train", 20, 10)
    reporter.update("data", 3, 0)
    reporter.update("data", 5, 10)
    reporter.flush()
    snap = state.snapshot()
    assert snap.categories["train"].current == 10 and snap.categories["train"].total == 10
    assert snap.categories["data"].current == 5
    assert len(snap.warnings) == 3
    assert any("'train' was -5 < 0" in w for w in snap.warnings)
    assert any("15 > total 10" in w for w in snap.warnings)
    assert any("total for 'data' must be > 0" in w for w in snap.warnings)
    reporter.close()


def test_inverted_progress_in_a_real_run_continues(tmp_path):
    from synapse_ray import BaseAction, LocalExecutor
    from tests.core.actions import AddParams

    class Inverted(BaseAction[AddParams]):
        def execute(self):
            self.set_progress(10, 5, "train")
            self.set_progress(-1, 5, "train")
            return "ok"

    handle = LocalExecutor().submit(Inverted, {"a": 1})
    assert handle.result(timeout=10) == "ok"
    snap = handle.progress()
    assert snap.status is RunStatus.SUCCEEDED
    assert len(snap.warnings) == 2


def test_late_batches_never_move_a_category_or_step_backwards():
    state = ProgressState(ProgressPlan.from_weights([("a", 1), ("b", 1)]))
    newer = ev(PROGRESS, "a", category="train", current=9, total=10, ts=200.0)
    older = ev(PROGRESS, "a", category="train", current=3, total=10, ts=100.0)
    state.apply([ev(STEP, "a", status="running"), newer, ev(STEP, "a", status="succeeded")])
    state.apply([older, ev(STEP, "a", status="running")])  # a batch that was overtaken in flight
    snap = state.snapshot()
    assert snap.categories["train"].current == 9
    assert snap.steps["a"].status is StepStatus.SUCCEEDED
    # a new attempt does reopen the step
    state.apply([ev(STEP, "a", 2, status="running")])
    assert state.snapshot().steps["a"].status is StepStatus.RUNNING


def test_worker_id_is_looked_up_once_and_names_a_forked_child_itself(monkeypatch):
    import os
    import socket

    from synapse_ray.runtime import reporter

    calls = []
    monkeypatch.setattr(reporter, "_worker_id", None)
    monkeypatch.setattr(reporter.socket, "gethostname", lambda: calls.append(1) or "host-a")
    assert [reporter.worker_id(), reporter.worker_id()] == [f"host-a:{os.getpid()}"] * 2
    assert len(calls) == 1  # a reporter is built per step; the host name is looked up once
    monkeypatch.undo()
    monkeypatch.setattr(reporter, "_worker_id", None)
    assert reporter.worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new process, so a new id
        os.write(write, reporter.worker_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child == f"{socket.gethostname()}:{pid}"
    assert reporter.worker_id() == f"{socket.gethostname()}:{os.getpid()}"
