"""map_shards on Ray: tasks and actor pools, progress through the aggregator, retries,
failures, the in-flight bound, cancel, and bad input refused before any shard runs."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest

from synapse_ray import (
    ClusterError,
    ConfigurationError,
    LocalExecutor,
    RayExecutor,
    RunCancelledError,
    RunStatus,
    RuntimeContext,
    StepError,
)
from synapse_ray.errors import ShardsFailedError
from synapse_ray.executors.ray.shards import RayShardRunner
from synapse_ray.parallel import iter_shards, map_shards
from tests.ray.conftest import wait_until
from tests.shard_actions import ShardAction, read_notes

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def _ray_ctx() -> RuntimeContext:
    return RuntimeContext(shard_runner=RayShardRunner(crash_retries=1))


@pytest.mark.parametrize("mode", ["task", "actors"])
def test_results_match_the_local_executor_in_shard_order(mode, tmp_path):
    params = {"n": 24, "flaky": [3], "retry_attempts": 2, "max_in_flight": 5}
    local = LocalExecutor().execute(ShardAction, params)
    on_ray = RayExecutor(mode=mode).execute(ShardAction, {**params, "log": str(tmp_path / "notes")})
    assert on_ray == local
    assert on_ray["results"] == [{"x": x, "square": x * x} for x in range(24)]
    starts = [n for n in read_notes(tmp_path / "notes") if n["event"] == "start"]
    assert len({n["pid"] for n in starts}) >= 2  # shards ran in Ray workers, not one process


def test_unordered_results_come_as_they_complete():
    rt = _ray_ctx()
    out = map_shards(rt, _slow_first, range(6), ordered=False, max_in_flight=6)
    assert sorted(out) == list(range(6)) and out[-1] == 0  # shard 0 sleeps longest: last in


def _slow_first(x: int) -> int:
    time.sleep(1.5 if x == 0 else 0.05)
    return x


@pytest.mark.parametrize("ordered", [True, False])
def test_streaming_results_stay_in_the_object_store_until_taken(monkeypatch, ordered):
    """A finished shard's value comes to the driver only when the caller takes it: one fetch
    per item handed out, however many shards are done and waiting."""
    import ray

    from synapse_ray.executors.ray.shards import RayShardSession

    fetches: list[int] = []  # RayShardSession.fetch calls, by the index of the value fetched
    real_fetch = RayShardSession.fetch

    def fetch(self: RayShardSession, handle: Any) -> Any:
        value = real_fetch(self, handle)
        fetches.append(value[0])
        return value

    arrived: list[int] = []  # every shard value ray.get brings to the driver, by any path
    real_get = ray.get

    def get(refs: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_get(refs, *args, **kwargs)
        if isinstance(out, bytes) and len(out) == 1 << 20:
            arrived.append(out[0])
        return out

    batches: list[int] = []  # shards each wait() found done: values that could be fetched early
    real_wait = RayShardSession.wait

    def wait(self: RayShardSession, timeout: float) -> Any:
        done = real_wait(self, timeout)
        batches.append(sum(1 for d in done if d.error is None))
        return done

    monkeypatch.setattr(RayShardSession, "fetch", fetch)
    monkeypatch.setattr(RayShardSession, "wait", wait)
    monkeypatch.setattr(ray, "get", get)
    stream = iter_shards(_ray_ctx(), _megabyte, range(8), max_in_flight=4, ordered=ordered)
    taken: list[int] = []
    try:
        for _ in range(8):
            item = next(stream)
            assert len(item.value) == 1 << 20 and set(item.value) == {item.index}
            taken.append(item.index)
            assert fetches == taken and arrived == taken  # fetched lazily: exactly what was taken
            running = list(stream._session._running)  # status refs: waiting on them fetches no value
            ray.wait(running, num_returns=len(running), timeout=60)  # in flight all finish, untaken
        with pytest.raises(StopIteration):
            next(stream)
    finally:
        stream.close()  # a failed assertion must not leave shards running
    assert sorted(taken) == list(range(8)) and (taken == list(range(8)) or not ordered)
    assert max(batches) >= 2  # finished values did wait in the object store for their turn
    assert fetches == taken and arrived == taken


def _megabyte(x: int) -> bytes:
    return bytes([x]) * (1 << 20)


def test_per_shard_progress_sums_to_100_through_the_aggregator(tmp_path):
    handle = RayExecutor().submit(
        ShardAction, {"n": 8, "sleep_s": 1.0, "progress_steps": 5, "max_in_flight": 4}
    )
    # mid-run: running shards' own fractions count, so the category is not a whole number of shards
    partial = wait_until(
        lambda: (c := handle.progress().categories.get("shards")) and 0 < c.current % 1 and c,
        timeout=60,
        interval=0.05,
    )
    assert partial.total == 8
    seen = []
    while not handle.done():
        seen.append(handle.progress().overall)
        time.sleep(0.05)
    handle.result(timeout=60)
    snap = handle.progress()
    assert seen == sorted(seen)  # overall never goes back
    counts = snap.shards["shards"]
    assert (counts.done, counts.running, counts.failed, counts.percent) == (8, 0, 0, 100.0)
    assert snap.steps["execute"].percent == 100.0 and snap.overall == 100.0


def test_retries_on_a_raise_and_on_a_worker_that_exits_hard(tmp_path):
    log = tmp_path / "notes"
    params = {"n": 10, "flaky": [2], "crash": [5, 7], "retry_attempts": 2, "log": str(log)}
    handle = RayExecutor(max_retries=2).submit(ShardAction, params)
    out = handle.result(timeout=120)
    assert [r["x"] for r in out["results"]] == list(range(10))
    counts = handle.progress().shards["shards"]
    assert (counts.done, counts.retried, counts.failed) == (10, 3, 0)
    attempts = {(n["index"], n["attempt"]) for n in read_notes(log) if n["event"] == "start"}
    assert {(2, 2), (5, 2), (7, 2)} <= attempts


def test_failures_aggregate_across_processes_and_allow_failures_tolerates(tmp_path):
    handle = RayExecutor().submit(ShardAction, {"n": 8, "fail": [2, 6], "max_in_flight": 8})
    with pytest.raises(StepError) as info:
        handle.result(timeout=60)
    err = info.value.__cause__
    assert isinstance(err, ShardsFailedError)
    assert [(f.index, f.error_type) for f in err.failures] == [(2, "ValueError"), (6, "ValueError")]
    assert isinstance(err.failures[0].exception, ValueError)
    assert handle.progress().shards["shards"].failed == 2

    ok = RayExecutor().execute(ShardAction, {"n": 8, "fail": [2, 6], "allow_failures": 2})
    assert ok["failures"] == [2, 6] and len(ok["results"]) == 6


def test_in_flight_bound_holds_for_pending_tasks_too(tmp_path):
    """Each shard pulled from the generator is submitted at once; at every pull, the
    shards pulled before it and not yet finished (running or queued) are fewer than the bound."""
    pulls, log = tmp_path / "pulls", tmp_path / "notes"
    params = {"n": 30, "sleep_s": 0.2, "max_in_flight": 3, "pulls": str(pulls), "log": str(log)}
    handle = RayExecutor().submit(ShardAction, params)
    running = []
    while not handle.done():
        counts = handle.progress().shards.get("shards")
        if counts is not None:
            running.append(counts.running)
        time.sleep(0.05)
    handle.result(timeout=60)
    assert max(running) <= 3
    pulled = {n["index"]: n["t"] for n in read_notes(pulls)}
    ended = {n["index"]: n["t"] for n in read_notes(log) if n["event"] == "end"}
    assert sorted(pulled) == sorted(ended) == list(range(30))
    outstanding = [sum(1 for j in range(k) if ended[j] > pulled[k]) for k in range(30)]
    assert max(outstanding) <= 2  # shard k itself makes the third
    assert max(outstanding) == 2  # and the bound was used: shards did overlap


def test_default_in_flight_comes_from_cluster_cpus_and_requested_resources():
    from synapse_ray.executors.ray.resources import ResourceView
    from synapse_ray.shards.stream import ShardStream

    cpus = int(sum(n.get("CPU", 0) for n in ResourceView().nodes()))
    rt = _ray_ctx()
    runner = rt.shard_runner
    assert ShardStream(rt, runner, abs, range(3)).max_in_flight == 2 * cpus
    assert ShardStream(rt, runner, abs, range(3), num_cpus=2).max_in_flight == 2 * (cpus // 2)
    assert ShardStream(rt, runner, _Pool, range(3)).max_in_flight == cpus  # one per pool actor
    assert ShardStream(rt, runner, abs, range(3), max_in_flight=7).max_in_flight == 7


class _Pool:
    def __call__(self, x: int) -> int:
        return x


def test_class_fn_runs_on_an_actor_pool_built_once_per_worker(tmp_path):
    log = tmp_path / "notes"
    ex = RayExecutor(env={"SHARD_TEST_LOG": str(log)})
    out = ex.execute(ShardAction, {"n": 40, "pool": True, "max_in_flight": 3})
    assert [r["square"] for r in out["results"]] == [x * x for x in range(40)]
    inits = [n for n in read_notes(log) if n["event"] == "init"]
    init_pids = [n["pid"] for n in inits]
    assert 1 <= len(inits) <= 3 and len(set(init_pids)) == len(init_pids)  # once per worker
    # every shard ran on a worker that was set up; one set up late may have had none left
    assert {r["pid"] for r in out["results"]} <= set(init_pids)


def test_cancel_mid_fan_out_stops_submitting_and_cancels_running_shards(tmp_path):
    log = tmp_path / "notes"
    params = {"n": 40, "sleep_s": 3.0, "progress_steps": 30, "max_in_flight": 4, "log": str(log)}
    handle = RayExecutor().submit(ShardAction, params)
    wait_until(lambda: (c := handle.progress().shards.get("shards")) and c.running >= 2, timeout=60)
    asked = time.monotonic()
    handle.cancel(grace_s=10.0)
    assert handle.status() is RunStatus.CANCELLED
    assert time.monotonic() - asked < 10.0  # within the grace period, no kill needed
    with pytest.raises(RunCancelledError):
        handle.result(timeout=1)
    counts = handle.progress().shards["shards"]
    assert counts.cancelled >= 1 and counts.submitted < 40 and counts.running == 0
    notes = read_notes(log)
    time.sleep(1.5)  # a shard still running (or a new one) would note its end (or start) by now
    assert read_notes(log) == notes


def test_unpicklable_fn_is_named_before_any_shard_runs():
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(ConfigurationError, match=r"fn '.*holds_a_lock' cannot be pickled"):
        map_shards(_ray_ctx(), holds_a_lock, range(3))


def test_resources_no_node_has_fail_at_once():
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"each shard needs .*tpu_pod=1.*missing"):
        map_shards(_ray_ctx(), abs, range(3), resources={"tpu_pod": 1})
    with pytest.raises(ClusterError, match="GPU=1"):
        map_shards(_ray_ctx(), abs, range(3), num_gpus=1)
    assert time.monotonic() - started < 15


def _fan_out(num_cpus: float) -> tuple[str, Any, int | None]:
    """In a Ray worker: map_shards(abs) with ``num_cpus`` per shard; what came of it (any
    error as text: it is checked here, in the worker), and the default in-flight bound."""
    from synapse_ray.shards.stream import ShardStream

    rt = _ray_ctx()
    try:
        stream = ShardStream(rt, rt.shard_runner, abs, range(-3, 0), num_cpus=num_cpus)
    except ClusterError as exc:
        return "ClusterError", str(exc), None
    bound = stream.max_in_flight
    return "ok", [item.value for item in stream], bound


class _StepActor:
    """Stands for an actor step: it keeps every resource it holds while it waits."""

    def fan_out(self, num_cpus: float) -> tuple[str, Any, int | None]:
        return _fan_out(num_cpus)


def test_shards_that_need_what_the_calling_actor_keeps_fail_at_once_not_hang():
    import ray

    from synapse_ray.executors.ray.resources import ResourceView, held_by_caller

    cpus = int(sum(n.get("CPU", 0) for n in ResourceView().nodes()))
    assert cpus == 4 and held_by_caller() is None  # the driver holds nothing
    actor = ray.remote(num_cpus=3)(_StepActor).remote()
    try:
        started = time.monotonic()
        kind, message, _ = ray.get(actor.fan_out.remote(2), timeout=60)
        assert time.monotonic() - started < 30  # at once: before, the shards pended forever
        assert kind == "ClusterError"
        assert "each shard needs CPU=2" in message
        assert "CPU=2 (the calling step holds 3 of the 4 on its node)" in message
        assert "Lower the step's request or the shards'" in message
        # one CPU is left beside the actor: shards of one CPU run, two at a time in flight
        assert ray.get(actor.fan_out.remote(1), timeout=60) == ("ok", [3, 2, 1], 2)
    finally:
        ray.kill(actor)
    # a task lends its CPUs back while it waits: holding them all, its shards still run
    task = ray.remote(num_cpus=cpus)(_fan_out)
    assert ray.get(task.remote(1), timeout=60) == ("ok", [3, 2, 1], 2 * cpus)


def test_a_generator_raising_midway_cancels_what_runs_and_says_so():
    from synapse_ray.errors import ShardSourceError

    def gen():
        yield from range(4)
        raise KeyError("row 4")

    from synapse_ray.runtime.progress import ProgressPlan
    from synapse_ray.runtime.progress_state import ProgressState
    from synapse_ray.runtime.reporter import LocalSink, ProgressReporter

    state = ProgressState(ProgressPlan.from_weights([("pre", 1.0)]))
    rt = RuntimeContext(
        shard_runner=RayShardRunner(crash_retries=1), progress=ProgressReporter(LocalSink(state))
    )
    rt.progress.begin_step("pre", 1)
    rt.bind_step("pre", 1)
    with pytest.raises(ShardSourceError, match="after 4 shards"):
        map_shards(rt, _slow_first, gen(), max_in_flight=8)
    rt.progress.flush()
    counts = state.snapshot().shards["shards"]
    assert counts.cancelled >= 1 and counts.running == 0  # shard 0 (1.5 s) was still running


def test_a_ray_data_step_reports_its_rows_under_the_step_category():
    from tests.shard_actions import DataAction

    handle = RayExecutor().submit(DataAction, {"rows": 200, "blocks": 20, "block_sleep_s": 0.3})
    mid = wait_until(
        lambda: (c := handle.progress().categories.get("decode")) and 0 < c.current < 200 and c,
        timeout=120,
        interval=0.05,
    )
    assert mid.total == 200  # the estimate from the plan: the source's row count
    assert handle.result(timeout=120) == {"count": 200, "sum": 2 * sum(range(200))}
    snap = handle.progress()
    assert (snap.categories["decode"].current, snap.categories["decode"].total) == (200, 200)
    assert snap.overall == 100.0


def test_a_ray_data_step_without_a_row_estimate_reports_blocks_while_it_runs(tmp_path):
    from tests.shard_actions import DataAction

    for b in range(20):  # 20 files of 10 lines: 0..199
        (tmp_path / f"part-{b:02}.txt").write_text("".join(f"{10 * b + i}\n" for i in range(10)))
    params = {"rows": 200, "blocks": 20, "block_sleep_s": 0.3, "text_dir": str(tmp_path)}
    handle = RayExecutor().submit(DataAction, params)
    mid = wait_until(
        lambda: (c := handle.progress().categories.get("decode")) and 0 < c.current < c.total and c,
        timeout=120,
        interval=0.05,
    )
    assert mid.total == 20 and mid.current == int(mid.current)  # whole blocks of the 20 expected
    assert handle.result(timeout=120) == {"count": 200, "sum": 2 * sum(range(200))}
    snap = handle.progress()
    assert (snap.categories["decode"].current, snap.categories["decode"].total) == (200, 200)
    assert snap.steps["execute"].percent == 100.0


def test_materialize_dataset_stops_its_pipeline_when_the_step_is_cancelled_midway(monkeypatch):
    """The executor is shut down by the time materialize_dataset raises, even while something
    else still holds its bundle iterator (a kept traceback, a reference cycle): freeing the
    iterator is not what stops the pipeline."""
    import ray
    from ray.data import Dataset

    from synapse_ray import materialize_dataset

    executors: list[Any] = []
    iterators: list[Any] = []  # held here the whole test, as a lingering reference would
    real = Dataset._execute_to_iterator

    def execute_to_iterator(self: Dataset, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        iterators.append(out[0])
        executors.append(out[2])
        return out

    monkeypatch.setattr(Dataset, "_execute_to_iterator", execute_to_iterator)
    rt = RuntimeContext()
    updates: list[tuple[float, float]] = []

    def update(category: str, current: float, total: float) -> None:
        updates.append((current, total))
        rt.cancel_token.cancel()  # the run is cancelled once the first block is in

    monkeypatch.setattr(rt.progress, "update", update)
    ds = ray.data.range(40, override_num_blocks=20).map_batches(functools.partial(_slow_batch, 0.3))
    with pytest.raises(RunCancelledError):
        materialize_dataset(rt, ds, category="decode")
    assert len(updates) == 1 and updates[0][1] == 40  # one block in, then the cancel
    assert len(executors) == 1 and executors[0]._shutdown
    assert iterators  # still referenced


def _slow_batch(sleep_s: float, batch: dict[str, Any]) -> dict[str, Any]:
    time.sleep(sleep_s)
    return batch


def test_materialize_dataset_refuses_what_is_not_a_dataset():
    from synapse_ray import materialize_dataset

    with pytest.raises(ConfigurationError, match="needs a ray.data.Dataset, got list"):
        materialize_dataset(RuntimeContext(), [1, 2])


class _CrashOnce:
    """A pool class whose worker exits hard on shard 2's first attempt."""

    def __call__(self, x: int, ctx) -> int:
        if x == 2 and ctx.attempt == 1:
            import os

            os._exit(1)
        return 10 * x


def test_a_pool_actor_that_dies_is_replaced_and_its_shard_retried():
    stream = iter_shards(_ray_ctx(), _CrashOnce, range(6), max_in_flight=2)
    assert [item.value for item in stream] == [0, 10, 20, 30, 40, 50]
    assert stream.counts["retried"] == 1 and stream.counts["failed"] == 0


def test_a_pool_class_whose_init_raises_fails_each_shard_with_that_error():
    with pytest.raises(ShardsFailedError) as info:
        map_shards(_ray_ctx(), _BadInit, range(3), max_in_flight=1)
    failures = info.value.failures
    assert [f.error_type for f in failures] == ["RuntimeError"]  # the first failure ends it
    assert "_BadInit.__init__ raised on a worker: RuntimeError: model file missing" in failures[0].message


class _BadInit:
    def __init__(self) -> None:
        raise RuntimeError("model file missing")

    def __call__(self, x: int) -> int:
        return x


def test_a_script_that_stops_reading_a_stream_exits(tmp_path):
    """A fan-out left unread is closed by the interpreter's last collection, after the
    progress thread is gone: it must not start one (it would never run, and the exit would
    wait for it forever) nor print an error."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        import ray
        from synapse_ray import RuntimeContext, iter_shards
        from synapse_ray.executors.ray.shards import RayShardRunner
        from synapse_ray.runtime.progress_state import ProgressState
        from synapse_ray.runtime.reporter import LocalSink, ProgressReporter

        def slow(x):
            time.sleep(0.2)
            return x

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        rt = RuntimeContext(progress=ProgressReporter(LocalSink(ProgressState(run_id="r"))),
                            shard_runner=RayShardRunner())
        STREAM = iter_shards(rt, slow, range(20))
        print("first", next(STREAM).index, flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "first 0" in proc.stdout, proc.stderr[-3000:]
    assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("reuse", [False, True], ids=["an-actor-per-step", "one-actor-reused"])
def test_a_materialized_dataset_reaches_the_next_steps_actor(reuse):
    """Its blocks are owned by the step actor that ran the pipeline: that actor stays until
    the run ends, so a later step on another actor reads them."""
    from tests.shard_actions import DataStepsAction

    executor = RayExecutor(mode="actors", reuse_actors=reuse)
    result = executor.execute(DataStepsAction, {"rows": 16})
    assert (result["count"], result["sum"]) == (16, 2 * sum(range(16)))
