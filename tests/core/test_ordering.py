"""Progress batches folded in the order each process sent them (no Ray: the aggregator class itself)."""

from __future__ import annotations

import asyncio
import time

from synapse_ray.executors.ray.aggregator import ProgressAggregator
from synapse_ray.executors.ray.ordering import InOrder, next_seq
from synapse_ray.runtime.progress import PLAN, PROGRESS, RUN, STEP, ProgressEvent, ProgressPlan
from synapse_ray.runtime.reporter import worker_id
from synapse_ray.runtime.status import RunStatus, StepStatus


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batches_in_order_pass_straight_through():
    order = InOrder()
    assert [order.arrive("r", "w", i, [i]) for i in range(3)] == [[[0]], [[1]], [[2]]]
    assert order.waiting() == 0


def test_an_early_batch_waits_for_the_ones_before_it():
    order = InOrder()
    assert order.arrive("r", "w", 2, ["c"]) == []
    assert order.arrive("r", "w", 1, ["b"]) == []
    assert order.waiting() == 2
    assert order.arrive("r", "w", 0, ["a"]) == [["a"], ["b"], ["c"]]
    assert order.waiting() == 0
    # each sender and each run has its own numbers
    assert order.arrive("r", "other", 0, ["x"]) == [["x"]]
    assert order.arrive("r2", "w", 0, ["y"]) == [["y"]]


def test_a_gap_is_given_up_on_after_gap_s_and_the_missing_batch_folds_late():
    clock = Clock()
    order = InOrder(gap_s=1.0, clock=clock)
    order.arrive("r", "w", 0, ["a"])
    assert order.arrive("r", "w", 2, ["c"]) == [] and order.arrive("r", "w", 3, ["d"]) == []
    clock.now += 0.5
    assert order.overdue() == []  # not yet
    clock.now += 0.6
    assert order.overdue() == [("r", [["c"], ["d"]])]
    assert order.waiting() == 0
    assert order.arrive("r", "w", 1, ["b"]) == [["b"]]  # it came after all: folded as it comes
    assert order.arrive("r", "w", 4, ["e"]) == [["e"]]  # and the stream goes on in order


def test_a_last_batch_never_waits_and_takes_the_earlier_ones_along():
    order = InOrder()
    order.arrive("r", "w", 0, ["a"])
    assert order.arrive("r", "w", 2, ["c"]) == []
    assert order.arrive("r", "w", 5, ["later"]) == []
    assert order.arrive("r", "w", 3, ["final"], last=True) == [["c"], ["final"]]
    assert order.waiting() == 1  # a batch numbered after the final one still waits its turn


def test_forget_drops_a_runs_streams():
    order = InOrder()
    order.arrive("r", "w", 1, ["b"])
    order.arrive("keep", "w", 0, ["k"])
    order.forget("r")
    assert order.waiting() == 0
    assert order.arrive("r", "w", 0, ["a"]) == [["a"]]  # numbering starts over for a new stream
    assert order.arrive("keep", "w", 1, ["k2"]) == [["k2"]]


def test_next_seq_numbers_each_run_from_zero_with_one_sender_per_process():
    sender, first = next_seq("run-a")
    assert sender == worker_id()  # the process's identity, as its progress events carry it
    assert next_seq("run-a") == (sender, first + 1)
    other_sender, other = next_seq(f"run-b-{time.time()}")
    assert other_sender == sender and other == 0


def test_a_final_status_ends_the_senders_numbering_for_the_run():
    """The driver holds no counter for the runs it ran (a long-lived driver runs many)."""
    from synapse_ray.executors.ray import ordering
    from synapse_ray.executors.ray.ordering import is_final

    run = f"run-final-{time.time()}"
    final = [ProgressEvent(RUN, status=RunStatus.SUCCEEDED.value)]
    assert is_final(final)
    assert not is_final([ProgressEvent(RUN, status=RunStatus.RUNNING.value), ProgressEvent(PROGRESS)])
    assert next_seq(run)[1] == 0 and next_seq(run)[1] == 1
    assert next_seq(run, last=is_final(final))[1] == 2
    assert run not in ordering._counters
    assert next_seq(run)[1] == 0  # a run id used again starts over (its aggregator folds it as it comes)


def test_the_aggregator_folds_a_plan_that_arrives_after_the_progress_sent_behind_it():
    plan = ProgressPlan.from_weights([("train", 1.0)])
    first = [ProgressEvent(PLAN, data=plan.to_data())]
    second = [
        ProgressEvent(STEP, step="train", status=StepStatus.RUNNING.value),
        ProgressEvent(PROGRESS, step="train", category="epochs", current=5, total=10),
    ]

    async def scenario() -> None:
        agg = ProgressAggregator()
        await agg.push("run", second, "worker", 1)  # overtook the plan
        assert (await agg.stats())["waiting"] == 1
        await agg.push("run", first, "worker", 0)
        snap = await agg.snapshot("run")
        assert snap.steps["train"].status is StepStatus.RUNNING
        assert snap.steps["train"].percent == 50.0
        assert (await agg.stats())["waiting"] == 0

    asyncio.run(scenario())


def test_the_aggregator_folds_what_waits_for_a_lost_batch_after_gap_s():
    plan = ProgressPlan.from_weights([("train", 1.0)])

    async def scenario() -> None:
        agg = ProgressAggregator()
        agg._order.gap_s = 0.05
        await agg.push("run", [ProgressEvent(PLAN, data=plan.to_data())], "worker", 0)
        # batch 1 was lost (its call failed): batch 2 must not wait for it for good
        progress = [ProgressEvent(PROGRESS, step="train", category="c", current=3, total=4)]
        await agg.push("run", progress, "worker", 2)
        assert (await agg.snapshot("run")).categories == {}
        deadline = time.monotonic() + 5.0
        while (await agg.stats())["waiting"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (await agg.snapshot("run")).categories["c"].current == 3

    asyncio.run(scenario())


def test_a_final_status_is_folded_at_once_even_after_a_lost_batch():
    plan = ProgressPlan.from_weights([("train", 1.0)])

    async def scenario() -> None:
        agg = ProgressAggregator()
        await agg.push("run", [ProgressEvent(PLAN, data=plan.to_data())], "driver", 0)
        await agg.push("run", [ProgressEvent(RUN, status=RunStatus.SUCCEEDED.value)], "driver", 2)
        assert (await agg.snapshot("run")).status is RunStatus.SUCCEEDED

    asyncio.run(scenario())
