"""map_shards in-process (LocalExecutor): results, order, progress, retries, failures, bad input."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import pytest

from synapse_ray import (
    ConfigurationError,
    LocalExecutor,
    RetryPolicy,
    RunCancelledError,
    RuntimeContext,
    StepError,
)
from synapse_ray.errors import ClusterError, ShardsFailedError, ShardSourceError
from synapse_ray.executors.ray.resources import Held, ResourceView
from synapse_ray.executors.ray.shards import default_in_flight
from synapse_ray.parallel import InProcessSession, InProcessShardRunner, ShardResult, iter_shards, map_shards
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.progress import PLAN, SHARD, STEP, ProgressEvent, ProgressPlan
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, NullSink, ProgressReporter
from synapse_ray.shards.model import ShardBase, ShardDone, ShardJob, ShardOptions, ShardTask
from tests.shard_actions import ShardAction, read_notes


class _NotCallable:
    """A class without __call__: its instances cannot run a shard."""


def _local_ctx() -> tuple[RuntimeContext, ProgressState]:
    state = ProgressState(ProgressPlan.from_weights([("pre", 1.0)]))
    rt = RuntimeContext(progress=ProgressReporter(LocalSink(state)))
    rt.progress.begin_step("pre", 1)
    rt.bind_step("pre", 1)
    return rt, state


def test_results_in_shard_order_and_progress_counts_add_up():
    handle = LocalExecutor().submit(ShardAction, {"n": 12, "progress_steps": 3, "max_in_flight": 4})
    out = handle.result(timeout=30)
    assert out["results"] == [{"x": x, "square": x * x} for x in range(12)]
    snap = handle.progress()
    counts = snap.shards["shards"]
    assert (counts.total, counts.submitted, counts.done, counts.running, counts.failed) == (12, 12, 12, 0, 0)
    assert counts.percent == 100.0 and counts.step == "execute"
    assert snap.overall == 100.0


def test_unordered_and_streaming_forms_give_the_same_values():
    rt, _ = _local_ctx()
    unordered = map_shards(rt, lambda x: x + 1, range(20), ordered=False)
    assert sorted(unordered) == list(range(1, 21))
    streamed = list(iter_shards(rt, lambda x: x + 1, range(20)))
    assert streamed == [ShardResult(i, i + 1) for i in range(20)]


def test_shards_are_read_lazily_and_in_flight_stays_bounded():
    rt, _ = _local_ctx()
    pulled: list[int] = []
    ran: list[int] = []

    def gen():
        for x in range(50):
            pulled.append(x)
            yield x

    def fn(x: int) -> int:
        ran.append(x)
        assert len(pulled) - len(ran) <= 3  # at most max_in_flight pulled and not yet run
        return x

    stream = iter_shards(rt, fn, gen(), max_in_flight=3)
    first = [next(stream) for _ in range(5)]
    assert [r.index for r in first] == [0, 1, 2, 3, 4]
    assert len(pulled) <= 5 + 3
    stream.close()  # stop early: nothing more is read
    assert len(pulled) <= 8


class _SlowFirstShard:
    """A fake runner whose shard 0 finishes last: every later result has to wait for it.

    It counts results finished and not yet fetched (what the mapper holds)."""

    def __init__(self) -> None:
        self.capacity = 4
        self.crash_retries = 0
        self.bounded_wait = True
        self.queue: list[Any] = []
        self.held = self.most_held = 0

    def open(self, job: Any) -> _SlowFirstShard:
        return self

    def submit(self, task: Any) -> None:
        self.queue.append(task)

    def wait(self, timeout: float) -> list[Any]:
        from synapse_ray.shards.model import ShardDone

        later = [t for t in self.queue if t.index != 0]
        task = later[0] if later else self.queue[0]
        self.queue.remove(task)
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        return [ShardDone(task, handle=task.shard)]

    def fetch(self, handle: Any) -> Any:
        self.held -= 1
        return handle

    def cancel(self) -> int:
        return 0

    def close(self) -> None:
        return None


def test_results_waiting_for_an_earlier_shard_stay_within_twice_max_in_flight():
    runner = _SlowFirstShard()
    rt = RuntimeContext(shard_runner=runner)
    assert map_shards(rt, lambda x: x, range(100), max_in_flight=4) == list(range(100))
    assert runner.most_held == 8  # the window fills, and holds no more than 2 x 4


def test_shard_progress_is_the_shard_weighted_sum():
    """Finished shards count 1, a running shard its own fraction; the step percent follows."""
    state = ProgressState(ProgressPlan.from_weights([("pre", 1.0), ("train", 3.0)]))
    ev = [ProgressEvent(STEP, "pre", 1, status="running")]

    def counts(done: int, running: int, closed: bool = False, map_id: str = "m1") -> ProgressEvent:
        tally = {"total": 4, "submitted": 4, "done": done, "running": running, "failed": 0}
        data = {"map": map_id, "counts": tally, "closed": closed}
        return ProgressEvent(SHARD, "pre", 1, "shards", data=data)

    def part(index: int, f: float | None, map_id: str = "m1") -> ProgressEvent:
        data = {"map": map_id, "index": index, **({"f": f} if f is not None else {"end": 1})}
        return ProgressEvent(SHARD, "pre", 1, "shards", data=data)

    state.apply([*ev, counts(1, 2), part(1, 0.5), part(2, 0.25)])
    snap = state.snapshot()
    assert snap.categories["shards"].current == pytest.approx(1.75)
    assert snap.steps["pre"].percent == pytest.approx(100 * 1.75 / 4)
    assert snap.overall == pytest.approx(25 * 1.75 / 4)
    assert (snap.shards["shards"].done, snap.shards["shards"].running) == (1, 2)
    # shard 1 ends (its last word lands before its result), then the mapper counts it done:
    # in between, its 0.5 is neither running nor done, and no percent may show that dip
    before = state.snapshot()
    state.apply([part(1, None)])
    between = state.snapshot()
    assert between.overall >= before.overall and between.steps["pre"].percent >= before.steps["pre"].percent
    state.apply([counts(2, 1)])
    assert state.snapshot().categories["shards"].current == pytest.approx(2.25)
    assert state.snapshot().overall >= before.overall  # overall never goes back
    state.apply([part(7, 0.9, map_id="old")])  # a straggler of another fan-out is ignored
    assert state.snapshot().categories["shards"].current == pytest.approx(2.25)
    state.apply([counts(4, 0, closed=True)])
    snap = state.snapshot()
    assert snap.steps["pre"].percent == 100.0 and snap.shards["shards"].percent == 100.0
    rebuilt = ProgressState()
    rebuilt.apply(state.to_events())
    assert rebuilt.snapshot().shards == snap.shards


def test_shard_progress_from_an_older_step_attempt_is_ignored():
    state = ProgressState(ProgressPlan.from_weights([("pre", 1.0)]))
    state.apply(
        [ProgressEvent(PLAN, data=state.plan.to_data()), ProgressEvent(STEP, "pre", 2, status="running")]
    )
    data = {"map": "m", "counts": {"total": 2, "done": 2}, "closed": True}
    state.apply([ProgressEvent(SHARD, "pre", 1, "shards", data=data)])
    assert state.snapshot().shards == {} and state.snapshot().steps["pre"].percent == 0


def test_a_raising_shard_is_retried_per_policy():
    out = LocalExecutor().submit(ShardAction, {"n": 6, "flaky": [2, 4], "retry_attempts": 2})
    assert out.result(timeout=30)["results"][2] == {"x": 2, "square": 4}
    counts = out.progress().shards["shards"]
    assert (counts.done, counts.retried, counts.failed) == (6, 2, 0)


def test_failures_are_aggregated_naming_each_shard_and_keeping_the_original():
    handle = LocalExecutor().submit(ShardAction, {"n": 8, "fail": [1, 5], "max_in_flight": 8})
    with pytest.raises(StepError) as info:
        handle.result(timeout=30)
    err = info.value.__cause__
    assert isinstance(err, ShardsFailedError)
    assert [(f.index, f.error_type, f.message) for f in err.failures] == [
        (1, "ValueError", "bad shard 1"),
        (5, "ValueError", "bad shard 5"),
    ]
    assert isinstance(err.failures[0].exception, ValueError)
    assert isinstance(err.__cause__, ValueError)
    assert "shard 1: ValueError: bad shard 1" in str(err) and "shard 5" in str(err)
    again = pickle.loads(pickle.dumps(err))  # it crosses process boundaries on Ray
    assert [f.index for f in again.failures] == [1, 5] and isinstance(again.failures[1].exception, ValueError)
    assert handle.progress().shards["shards"].failed == 2
    assert "map_shards(work)" in str(err)


def test_once_failures_exceed_the_allowance_no_new_shard_is_submitted():
    handle = LocalExecutor().submit(ShardAction, {"n": 50, "fail": [1], "max_in_flight": 2})
    with pytest.raises(StepError) as info:
        handle.result(timeout=30)
    assert [f.index for f in info.value.__cause__.failures] == [1]
    counts = handle.progress().shards["shards"]
    assert counts.submitted <= 3 and counts.failed == 1


def test_allow_failures_tolerates_and_reports_them():
    handle = LocalExecutor().submit(ShardAction, {"n": 6, "fail": [0, 3], "allow_failures": 2})
    out = handle.result(timeout=30)
    assert out["failures"] == [0, 3]
    assert [r["x"] for r in out["results"]] == [1, 2, 4, 5]
    counts = handle.progress().shards["shards"]
    assert (counts.done, counts.failed, counts.percent) == (4, 2, 100.0)


def test_class_fn_is_built_once_per_worker(tmp_path, monkeypatch):
    log = tmp_path / "notes"
    out = LocalExecutor(env={"SHARD_TEST_LOG": str(log)}).execute(ShardAction, {"n": 5, "pool": True})
    assert [r["square"] for r in out["results"]] == [0, 1, 4, 9, 16]
    assert [n["event"] for n in read_notes(log)] == ["init"]


def test_cancel_stops_submitting():
    rt, _ = _local_ctx()
    seen: list[int] = []

    def fn(x: int) -> int:
        seen.append(x)
        if x == 3:
            rt.cancel_token.cancel("test")
        return x

    with pytest.raises(RunCancelledError):
        map_shards(rt, fn, range(100), max_in_flight=2)
    assert seen == [0, 1, 2, 3]


def test_the_runner_travels_with_the_runtime_context():
    rt = RuntimeContext(shard_runner=InProcessShardRunner())
    assert isinstance(pickle.loads(pickle.dumps(rt)).shard_runner, InProcessShardRunner)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"fn": 42}, "fn must be callable"),
        ({"fn": lambda: 1}, "must take the shard"),
        ({"fn": _NotCallable}, "instances are not callable"),
        ({"shards": 7}, "shards must be iterable"),
        ({"shards": "abc"}, "shards is a str"),
        ({"max_in_flight": 0}, "max_in_flight must be an integer >= 1"),
        ({"max_in_flight": -3}, "max_in_flight must be an integer >= 1"),
        ({"max_in_flight": True}, "max_in_flight must be an integer >= 1"),
        ({"allow_failures": -1}, "allow_failures must be an integer >= 0"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"num_cpus": -1}, "num_cpus must be a number >= 0"),
        ({"resources": {"gpu_big": "x"}}, "resources must map resource names"),
        ({"category": ""}, "category must be a non-empty string"),
    ],
)
def test_bad_input_is_refused_before_any_shard_runs(kwargs: dict[str, Any], needle: str):
    rt, _ = _local_ctx()
    ran: list[int] = []
    args = {"fn": ran.append, "shards": range(3), **kwargs}
    with pytest.raises(ConfigurationError, match=needle):
        map_shards(rt, args.pop("fn"), args.pop("shards"), **args)
    assert ran == []


def test_a_generator_raising_midway_is_a_clear_error():
    rt, _ = _local_ctx()

    def gen():
        yield from range(3)
        raise OSError("disk gone")

    with pytest.raises(ShardSourceError, match=r"raised OSError after 3 shards: disk gone") as info:
        map_shards(rt, lambda x: x, gen())
    assert isinstance(info.value.__cause__, OSError)


def test_map_shards_needs_a_context():
    with pytest.raises(ConfigurationError, match="needs a step context or a RuntimeContext"):
        map_shards(object(), lambda x: x, [1])


def test_retry_waits_its_delay_and_a_cancel_cuts_it_short():
    rt, _ = _local_ctx()
    timer = threading.Timer(0.3, rt.cancel_token.cancel)
    timer.start()
    with pytest.raises(RunCancelledError):
        map_shards(rt, _always_fails, [1], retry=RetryPolicy(max_attempts=5, delay=30.0))
    timer.cancel()


def _always_fails(x: int) -> int:
    raise RuntimeError("no")


def test_a_failing_step_fails_at_once_without_running_a_waiting_retry():
    """Shard 0 waits 3 s for its retry when shard 1 fails for good: the step is failing, so
    shard 0 is not sent again; it fails with its last error and the error comes now."""
    rt, state = _local_ctx()
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        if x == 0:
            raise RuntimeError("flaky 0")
        raise ValueError("bad 1")

    policy = RetryPolicy(max_attempts=3, delay=3.0, retry_on=(RuntimeError,))
    started = time.monotonic()
    with pytest.raises(ShardsFailedError) as info:
        map_shards(rt, fn, [0, 1], retry=policy, max_in_flight=2)
    assert time.monotonic() - started < policy.delay
    assert calls == [0, 1]  # shard 0 ran exactly once
    assert [(f.index, f.error_type, f.message) for f in info.value.failures] == [
        (0, "RuntimeError", "flaky 0"),
        (1, "ValueError", "bad 1"),
    ]
    rt.progress.flush()
    counts = state.snapshot().shards["shards"]
    assert (counts.submitted, counts.failed, counts.cancelled, counts.running) == (2, 2, 0, 0)


def test_a_cancel_counts_queued_shards_and_waiting_retries_as_cancelled():
    """Shard 0 waits 30 s for its retry, shards 3 and 4 are queued when shard 2 cancels the
    run: all three count as cancelled, so the final counts add up to what was submitted."""
    rt, state = _local_ctx()

    def fn(x: int) -> int:
        if x == 0:
            raise RuntimeError("retry me later")
        if x == 2:
            rt.cancel_token.cancel("test")
        return x

    with pytest.raises(RunCancelledError, match="3 unfinished shards cancelled"):
        map_shards(rt, fn, range(100), max_in_flight=4, retry=RetryPolicy(max_attempts=2, delay=30.0))
    rt.progress.flush()
    c = state.snapshot().shards["shards"]
    assert (c.submitted, c.done, c.failed, c.cancelled, c.running) == (5, 2, 0, 3, 0)
    assert c.done + c.failed + c.cancelled == c.submitted


def test_the_in_process_session_cancel_drops_and_counts_its_queued_shards():
    ran: list[int] = []
    base = ShardBase("m", "shards", None, 1, 1, NullSink(), CancelToken(), {}, wants_ctx=False)
    session = InProcessShardRunner().open(ShardJob(ran.append, base, ShardOptions(), "map_shards(append)"))
    for i in range(3):
        session.submit(ShardTask(i, i))
    assert [d.task.index for d in session.wait(0)] == [0]
    assert session.cancel() == 2  # shards 1 and 2 were queued, not finished
    assert session.wait(0) == [] and ran == [0]


class _SlowToCancel:
    """A fake runner whose ``cancel`` stands for Ray's grace wait, during which the step may
    be killed: it notes the shard counts reported by the time it is called."""

    capacity = 4
    crash_retries = 0
    bounded_wait = True

    def __init__(self, rt: RuntimeContext, state: ProgressState) -> None:
        self.rt, self.state = rt, state
        self.running: list[ShardTask] = []
        self.seen: Any = None

    def open(self, job: Any) -> _SlowToCancel:
        return self

    def submit(self, task: ShardTask) -> None:
        self.running.append(task)

    def wait(self, timeout: float) -> list[ShardDone]:
        """Shard 0 finishes, then the run is cancelled while the others still run."""
        self.rt.cancel_token.cancel("test")
        return [ShardDone(self.running.pop(0), handle=0)]

    def fetch(self, handle: Any) -> Any:
        return handle

    def cancel(self) -> int:
        self.rt.progress.flush()
        self.seen = self.state.snapshot().shards["shards"]
        stopped, self.running = len(self.running), []
        return stopped

    def close(self) -> None:
        return None


def test_running_shards_are_reported_cancelled_before_the_runner_waits_for_them():
    rt, state = _local_ctx()
    runner = _SlowToCancel(rt, state)
    rt.shard_runner = runner
    with pytest.raises(RunCancelledError):
        map_shards(rt, lambda x: x, range(10), max_in_flight=4)
    seen = runner.seen
    assert (seen.submitted, seen.done, seen.cancelled, seen.running) == (4, 1, 3, 0)


class _BoundedInProcess(InProcessShardRunner):
    """The in-process runner, claiming a wait bounded by its timeout (as Ray's is)."""

    def open(self, job: ShardJob) -> InProcessSession:
        session = super().open(job)
        session.bounded_wait = True  # type: ignore[misc]
        return session


def _record_counts(rt: RuntimeContext, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    forward = rt.progress.shard_event

    def record(category: str, data: dict[str, Any]) -> None:
        sent.append(data)
        forward(category, data)

    monkeypatch.setattr(rt.progress, "shard_event", record)
    return sent


def test_a_fast_fan_out_sends_its_counts_a_few_times_a_second_and_the_last_at_once(monkeypatch):
    """Each finished shard changes the counts; sending every change would be a batch to the
    aggregator per shard. On a runner whose wait is bounded (Ray's) they go at most every
    ``COUNTS_EVERY`` s, the closing ones at once."""
    from synapse_ray.shards import stream

    rt, state = _local_ctx()
    rt.shard_runner = _BoundedInProcess()
    sent = _record_counts(rt, monkeypatch)
    started = time.monotonic()
    assert map_shards(rt, lambda x: x, range(300)) == list(range(300))
    took = time.monotonic() - started
    assert len(sent) <= 2 + took / stream.COUNTS_EVERY + 1, (len(sent), took)
    last = sent[-1]
    assert last["closed"] and (last["counts"]["done"], last["counts"]["running"]) == (300, 0)
    rt.progress.flush()
    assert state.snapshot().shards["shards"].done == 300


def test_a_runner_that_runs_shards_in_its_wait_sends_every_change(monkeypatch):
    """In-process, the next shard runs inside ``wait``: counts held back would stay stale
    for its whole length, so each change goes out before it starts."""
    rt, _ = _local_ctx()
    sent = _record_counts(rt, monkeypatch)
    done_when_sent: list[int] = []

    def slow_after_a_fast_one(x: int) -> int:
        done_when_sent.append(sent[-1]["counts"]["done"])  # what a reader sees while x runs
        return x

    assert map_shards(rt, slow_after_a_fast_one, range(5)) == list(range(5))
    assert done_when_sent == [0, 1, 2, 3, 4]


def test_the_live_display_shows_shard_counts():
    from synapse_ray.cli.display import describe

    state = ProgressState(ProgressPlan.from_weights([("pre", 1.0)]))
    tally = {"total": 4, "submitted": 3, "done": 2, "running": 1, "failed": 0, "retried": 1}
    state.apply(
        [
            ProgressEvent(STEP, "pre", 1, status="running"),
            ProgressEvent(SHARD, "pre", 1, "decode", data={"map": "m", "counts": tally}),
        ]
    )
    line = describe(state.snapshot())
    assert "decode: shards 2/4, running 1, retried 1" in line
    assert "failed" not in line and "decode=" not in line


class _FixedNodes(ResourceView):
    """A ``ResourceView`` over fixed node totals (node id -> totals), in place of a cluster's."""

    def __init__(self, nodes: dict[str, dict[str, float]]) -> None:
        super().__init__()
        self.fixed = nodes

    def _read(self) -> dict[str, dict[str, float]]:
        return {node_id: dict(totals) for node_id, totals in self.fixed.items()}


def test_shards_that_need_what_the_calling_task_keeps_are_refused_naming_it():
    """A task with a GPU calling map_shards(num_gpus=1) on a one-GPU cluster: the node has
    the GPU, but the task keeps it while it waits, so the shards would pend forever."""
    view = _FixedNodes({"head": {"CPU": 8.0, "GPU": 1.0}})
    task = Held("head", {"GPU": 1.0}, actor=False)
    view.check("shards", {"num_gpus": 1})  # the node totals alone would let them through
    with pytest.raises(ClusterError) as info:
        view.check_held("shards", {"num_cpus": 1, "num_gpus": 1}, task)
    message = str(info.value)
    assert "GPU=1 (the calling step holds 1 of the 1 on its node)" in message
    assert "Ray task (which keeps all but its CPU while it waits)" in message
    assert "Lower the step's request or the shards'" in message
    assert info.value.missing == ["GPU=1 (the calling step holds 1 of the 1 on its node)"]
    # its CPU is lent back while it waits: CPU-only shards fit, and all 8 CPUs count
    view.check_held("shards", {"num_cpus": 1}, task)
    assert default_in_flight(view.nodes(task), {"CPU": 1.0}) == 8

    two = _FixedNodes({"head": {"CPU": 8.0, "GPU": 2.0}})
    two.check_held("shards", {"num_gpus": 1}, task)  # one GPU is left beside the task's
    assert default_in_flight(two.nodes(task), {"GPU": 1.0}) == 1
    assert default_in_flight(two.nodes(), {"GPU": 1.0}) == 2  # what the check used to count


def test_shards_that_need_what_the_calling_actor_keeps_are_refused_unless_another_node_has_it():
    actor = Held("a", {"CPU": 3.0, "slot": 1.0}, actor=True)
    one = _FixedNodes({"a": {"CPU": 4.0, "slot": 1.0}})
    with pytest.raises(ClusterError, match=r"CPU=2 \(the calling step holds 3 of the 4 on its node\)"):
        one.check_held("shards", {"num_cpus": 2}, actor)  # an actor keeps its CPUs too
    with pytest.raises(
        ClusterError, match=r"slot=1 \(the calling step holds 1 of the 1.*actor \(which keeps"
    ):
        one.check_held("shards", {"resources": {"slot": 1}}, actor)
    one.check_held("shards", {"num_cpus": 1}, actor)
    assert default_in_flight(one.nodes(actor), {"CPU": 1.0}) == 1

    two = _FixedNodes({"a": {"CPU": 4.0, "slot": 1.0}, "b": {"CPU": 4.0, "slot": 1.0}})
    two.check_held("shards", {"num_cpus": 2, "resources": {"slot": 1}}, actor)  # node b has both
    assert default_in_flight(two.nodes(actor), {"slot": 1.0}) == 1
    # each resource is somewhere, but not both on a node once the actor's are taken out
    split = _FixedNodes({"a": {"GPU": 1.0, "slot": 1.0}, "b": {"GPU": 1.0}})
    split.check("shards", {"num_gpus": 1, "resources": {"slot": 1}})  # node a has both
    with pytest.raises(
        ClusterError, match=r"that combination on a single node once the calling step's GPU=1"
    ):
        split.check_held("shards", {"num_gpus": 1, "resources": {"slot": 1}}, Held("a", {"GPU": 1.0}, True))


def test_a_driver_or_a_caller_holding_nothing_is_never_refused_by_the_held_check():
    view = _FixedNodes({"head": {"CPU": 1.0, "GPU": 1.0}})
    view.check_held("shards", {"num_gpus": 1}, None)  # the driver
    view.check_held("shards", {"num_cpus": 1}, Held("head", {}, actor=False))
    view.check_held("shards", {"num_gpus": 1}, Held("elsewhere", {"GPU": 1.0}, actor=True))
