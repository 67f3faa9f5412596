"""Lifecycle pieces that need no Ray process: layering, sender, state, logging, targets."""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import threading
import time
import weakref
from pathlib import Path

import pytest

from synapse_ray import ClusterError, LocalExecutor, RunStatus
from synapse_ray.executors.handle import RunHandle
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.progress import LOG, PLAN, PROGRESS, RUN, STEP, ProgressEvent, ProgressPlan
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import _SENDER, ProgressReporter
from tests.conftest import REPO
from tests.core.actions import AddAction


def _imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["runtime", "steps"])
def test_runtime_and_steps_never_import_ray(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(
            n for n in _imports_of(path) if n == "ray" or n.startswith("ray.")
        )
        for path in (REPO / "synapse_ray" / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert offenders  # the scan saw files


class _ListSink:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def send(self, events: list[ProgressEvent]) -> None:
        self.events.extend(events)


class _OrderedSink(_ListSink):
    """Records each batch sent and each sync, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def send(self, events: list[ProgressEvent]) -> None:
        super().send(events)
        self.log.append("+".join(e.kind for e in events))

    def sync(self) -> int:
        self.log.append("sync")
        return 0


class _QuietSource:
    def finish(self, timeout: float) -> None:
        return None


def test_the_final_status_leaves_after_every_earlier_batch_has_landed():
    """The Ray aggregator is an async actor: two calls from one caller may run out of
    order. A run's state drops step progress that arrives after the run's end, so
    everything sent before must have landed (sink.sync) before the final status goes,
    and a forwarded tail leaves in the final status's own batch."""
    sink = _OrderedSink()
    rt = RuntimeContext(progress=ProgressReporter(sink, interval=0.0))
    tail = [ProgressEvent(PROGRESS, "execute", 1, "train", 2, 2)]

    def work() -> str:
        rt.progress.update("train", 1, 2)
        rt.progress.flush()  # a batch already on its way
        rt.progress.forward(tail, wake=False)  # a worker's last events, as task mode forwards them
        return "ok"

    handle = RunHandle(rt, _QuietSource()).start(work)
    assert handle.result(timeout=10) == "ok"
    assert handle.wait_settled(10)
    final = len(sink.log) - 1
    assert sink.log[final].endswith("run"), sink.log
    earlier = [i for i, entry in enumerate(sink.log[:final]) if entry != "sync"]
    assert earlier, sink.log  # the flushed batch went before the final one...
    assert "sync" in sink.log[earlier[-1] + 1 : final], sink.log  # ...and landed before it left
    assert [(e.kind, e.current) for e in sink.events] == [(PROGRESS, 1), (PROGRESS, 2), (RUN, 0.0)]


def test_sender_restarts_after_its_thread_died():
    reporter = ProgressReporter(_ListSink(), interval=0.01)
    reporter.update("train", 1, 2)
    deadline = time.monotonic() + 5
    while not reporter.sink.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reporter.sink.events
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    _SENDER._thread = dead  # as if the sender thread had died
    reporter.update("train", 2, 2)
    deadline = time.monotonic() + 5
    while reporter.sink.events[-1].current != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reporter.sink.events[-1].current == 2
    assert _SENDER._thread is not dead and _SENDER._thread.is_alive()


def test_sender_holds_no_reporter_once_sent():
    reporter = ProgressReporter(_ListSink(), interval=0.01)
    reporter.update("train", 1, 2)
    ref = weakref.ref(reporter)
    deadline = time.monotonic() + 5
    while _SENDER.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    del reporter
    gc.collect()
    assert ref() is None  # nothing in the sender keeps a finished reporter alive


def test_a_reporter_its_caller_flushed_is_free_at_once():
    """A run that ends flushes its own reporter; the sender must not hold it (and
    the run's state) until its next interval: a tight loop of short runs would
    keep the last interval's runs alive."""
    reporter = ProgressReporter(_ListSink(), interval=60.0)
    reporter.update("train", 1, 2)  # marked: the sender would send it in 60 s
    reporter.flush()
    assert [e.current for e in reporter.sink.events] == [1]
    ref = weakref.ref(reporter)
    del reporter
    gc.collect()
    assert ref() is None


def test_a_mark_after_a_flush_is_still_sent():
    reporter = ProgressReporter(_ListSink(), interval=0.01)
    reporter.update("train", 1, 2)
    reporter.flush()
    reporter.update("train", 2, 2)  # after the flush: the sender must still send it
    deadline = time.monotonic() + 5
    while [e.current for e in reporter.sink.events] != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.current for e in reporter.sink.events] == [1, 2]


def test_a_new_run_attempt_restarts_steps_and_drops_stragglers():
    state = ProgressState(run_id="r")
    plan = ProgressPlan.from_weights([("execute", 1.0)])
    state.apply(
        [ProgressEvent(PLAN, data=plan.to_data()), ProgressEvent(STEP, "execute", 1, status="running")]
    )
    state.apply([ProgressEvent(PROGRESS, "execute", 1, "train", 1, 2)])
    assert state.snapshot().overall == 50.0
    state.apply([ProgressEvent(PLAN, data=plan.to_data(), run_attempt=2)])
    snap = state.snapshot()
    assert snap.run_attempt == 2 and snap.steps["execute"].status.value == "pending"
    assert snap.overall == 50.0  # overall never goes backwards
    state.apply([ProgressEvent(STEP, "execute", 1, status="failed", run_attempt=1)])  # late, old attempt
    assert state.snapshot().steps["execute"].status.value == "pending"


def test_state_rebuilds_from_its_own_events():
    state = ProgressState(run_id="r")
    plan = ProgressPlan.from_weights([("a", 1.0), ("b", 1.0)])
    state.apply(
        [
            ProgressEvent(PLAN, data=plan.to_data()),
            ProgressEvent(STEP, "a", 1, status="running"),
            ProgressEvent(PROGRESS, "a", 1, "load", 3, 3),
            ProgressEvent(STEP, "a", 1, status="succeeded"),
            ProgressEvent(STEP, "b", 2, status="running"),
            ProgressEvent(RUN, status="FAILED", data={"error": "boom"}),
        ]
    )
    copy = ProgressState(run_id="r")
    copy.apply(state.to_events())
    a, b = state.snapshot(), copy.snapshot()
    assert (b.status, b.error, b.overall) == (a.status, a.error, a.overall)
    assert {k: (s.status, s.attempt) for k, s in b.steps.items()} == {
        k: (s.status, s.attempt) for k, s in a.steps.items()
    }
    assert b.categories == a.categories


def test_aggregator_evicts_abandoned_runs_and_asks_for_a_seed():
    from synapse_ray.executors.ray.aggregator import ProgressAggregator
    from synapse_ray.executors.ray.transport import NEEDS_SEED

    async def scenario() -> None:
        agg = ProgressAggregator(abandon_after=0.05)
        plan = ProgressPlan.from_weights([("execute", 1.0)])
        await agg.push("old", [ProgressEvent(PLAN, data=plan.to_data())])
        await asyncio.sleep(0.1)
        await agg.push("new", [ProgressEvent(PLAN, data=plan.to_data())])  # eviction runs on new state
        assert (await agg.stats())["runs"] == 1
        # the abandoned run's driver comes back with its final status: it is told to re-seed
        flags = await agg.push("old", [ProgressEvent(RUN, status="SUCCEEDED")])
        assert flags & NEEDS_SEED
        await agg.restore(
            "old", [ProgressEvent(PLAN, data=plan.to_data()), ProgressEvent(RUN, status="SUCCEEDED")], False
        )
        assert (await agg.snapshot("old")).status is RunStatus.SUCCEEDED

    asyncio.run(scenario())


def test_stale_current_cluster_pointer_is_a_clear_error(tmp_path, monkeypatch):
    import socket

    from synapse_ray.executors.ray import connect

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pointer = tmp_path / "ray_current_cluster"
    pointer.write_text(f"127.0.0.1:{port}")
    monkeypatch.setattr(connect, "current_cluster_pointer", lambda: (pointer, f"127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        connect.check_current_cluster(2.0)
    assert time.monotonic() - started < 10
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "ray stop" in text and "address='local'" in text


def test_local_env_is_set_for_the_action_and_restored():
    os.environ.pop("SYNAPSE_TEST_ENV", None)

    class EnvAction(AddAction):
        def execute(self):
            return os.environ.get("SYNAPSE_TEST_ENV")

    assert LocalExecutor(env={"SYNAPSE_TEST_ENV": "on"}).execute(EnvAction, {"a": 1}) == "on"
    assert "SYNAPSE_TEST_ENV" not in os.environ


def test_redaction_is_added_to_an_application_pipeline():
    import structlog

    from synapse_ray.runtime import logging as ours

    seen: list[dict] = []

    def capture(logger, method, event_dict):
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    old = structlog.get_config()
    try:
        structlog.reset_defaults()
        structlog.configure(processors=[structlog.processors.add_log_level, capture])
        ours._configured = False
        ours.register_secret("app-secret-token-123")
        ours.configure_logging()
        structlog.get_logger("app").info("hello", detail="uses app-secret-token-123 here", token="x")
    finally:
        structlog.configure(**old)
        ours._configured = False
        ours.configure_logging(force=True)
    assert seen and "app-secret-token-123" not in str(seen)
    assert seen[0]["token"] == ours.MASK


def test_file_target_has_a_stable_name_and_is_reimported_when_edited(tmp_path):
    from synapse_ray.targets import file_module_name, load_action

    path = tmp_path / "act.py"
    source = (
        "from pydantic import BaseModel\n"
        "from synapse_ray import BaseAction\n"
        "class P(BaseModel):\n    a: int = 0\n"
        "class A(BaseAction[P]):\n    def execute(self):\n        return {VALUE}\n"
    )
    path.write_text(source.replace("{VALUE}", "1"))
    first = load_action(f"{path}:A")
    assert first.__module__ == file_module_name(path.resolve())
    assert load_action(f"{path}:A") is first  # unchanged file: same class
    path.write_text(source.replace("{VALUE}", "22"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = load_action(f"{path}:A")
    assert second is not first
    assert LocalExecutor().execute(second, {}) == 22


def test_the_aggregator_keeps_only_the_latest_finished_runs():
    from synapse_ray.executors.ray.aggregator import ProgressAggregator
    from synapse_ray.executors.ray.transport import NEEDS_SEED

    async def scenario() -> None:
        agg = ProgressAggregator(keep_finished=3)
        plan = ProgressPlan.from_weights([("execute", 1.0)])
        for i in range(6):
            await agg.push(
                f"r{i}", [ProgressEvent(PLAN, data=plan.to_data()), ProgressEvent(RUN, status="SUCCEEDED")]
            )
        await agg.push("running", [ProgressEvent(PLAN, data=plan.to_data())])  # eviction runs on new state
        assert (await agg.stats())["runs"] == 4  # the 3 latest finished runs and the running one
        assert (await agg.snapshot("r5")).status is RunStatus.SUCCEEDED
        assert await agg.push("r0", [ProgressEvent(RUN, status="SUCCEEDED")]) & NEEDS_SEED  # r0 went

    asyncio.run(scenario())


def test_connecting_checks_the_current_cluster_pointer_before_ray_init(monkeypatch):
    """Without an address, ``ensure_ray`` asks whether Ray's pointer names a live cluster
    before ``ray.init`` (which would retry a dead one for minutes)."""
    import ray

    from synapse_ray.executors.ray import connect

    class Refused(ClusterError):
        pass

    def stale(timeout: float) -> None:
        raise Refused("stale pointer", address="127.0.0.1:1")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init ran before the pointer check"))
    monkeypatch.setattr(connect, "check_current_cluster", stale)
    with pytest.raises(Refused):
        connect.ensure_ray(None, 2.0)


def test_a_local_instance_keeps_one_idle_worker_more_than_cpus_unless_the_user_chose(monkeypatch):
    """A step fanning out over every CPU needs CPUs + 1 processes; the raylet of an instance
    we start gets that soft limit in its environment, and a value the user set is kept."""
    from synapse_ray.executors.ray import connect

    monkeypatch.delenv(connect.SOFT_LIMIT_ENV, raising=False)
    assert connect.local_instance_env(2) == {"RAY_num_workers_soft_limit": "3"}
    counted = int(connect.local_instance_env()[connect.SOFT_LIMIT_ENV])
    assert counted >= 2  # Ray's own CPU count, plus one
    monkeypatch.setenv(connect.SOFT_LIMIT_ENV, "7")
    assert connect.local_instance_env(2) == {}


def test_joining_a_cluster_leaves_its_workers_alone(monkeypatch):
    """Only an instance this process starts gets the setting: joining one passes nothing."""
    import ray

    from synapse_ray.executors.ray import connect

    seen: list[str | None] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(connect.SOFT_LIMIT_ENV, raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(os.environ.get(connect.SOFT_LIMIT_ENV)))
    monkeypatch.setattr(connect, "check_current_cluster", lambda timeout: True)  # a live pointer
    connect.ensure_ray(None, 2.0)
    monkeypatch.setattr(connect, "check_current_cluster", lambda timeout: False)  # nothing to join
    connect.ensure_ray(None, 2.0)
    assert seen[0] is None
    assert seen[1] is not None and int(seen[1]) >= 2
    assert connect.SOFT_LIMIT_ENV not in os.environ  # set around ray.init only


def test_close_waits_for_the_final_records_of_runs_that_ended():
    """``close`` (and leaving ``with executor:``) waits, bounded, for each ended run's record."""
    waited: list[float] = []

    class Ended:
        def wait_settled(self, timeout: float) -> bool:
            waited.append(timeout)
            return False  # its record is still pending

    executor = LocalExecutor()
    handles = [Ended(), Ended()]
    for handle in handles:
        executor._track(handle)  # type: ignore[arg-type]
    assert executor.close(timeout=5.0) is False
    assert len(waited) == 2 and all(0 <= t <= 5.0 for t in waited)
    with executor:
        pass
    assert len(waited) == 4  # leaving the block closed it too


def test_a_worker_process_gets_our_pipeline_from_structlogs_first_import():
    """What a fresh Ray worker does before a step: structlog is not imported (it costs
    about 100 ms), yet user code that imports it and logs gets stderr and redaction."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from synapse_ray.executors.ray.remote import _configure_worker_logging\n"
        "_configure_worker_logging()\n"
        "assert 'structlog' not in sys.modules\n"
        "import structlog\n"
        "assert not any(type(f).__name__ == '_ConfigureOnImport' for f in sys.meta_path)\n"
        "assert type(structlog.__spec__.loader).__name__ != '_ThenConfigure'\n"
        "structlog.get_logger('user').info('step_log', token='tok-123456', note='plain')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""  # stdout stays the CLI's (the result)
    assert "step_log" in out.stderr and "tok-123456" not in out.stderr and "**********" in out.stderr


def test_logs_of_a_finished_run_the_aggregator_dropped_come_from_the_driver_copy():
    """An aggregator that evicted a finished run (or restarted) answers ``[]`` for its logs:
    the driver's copy has them, as it has the run's snapshot."""
    from synapse_ray.executors.ray.source import AggregatorSource
    from synapse_ray.executors.ray.transport import AggregatorRef, RaySink

    sink = RaySink(AggregatorRef("progress-test", "ns"), "r1", mirror=True)
    source = AggregatorSource(sink.aggregator, "r1", sink)
    answers = {"logs": []}
    source._call = lambda method, *args, **kw: answers[method]  # type: ignore[method-assign]
    assert sink.mirror is not None
    sink.mirror.apply([ProgressEvent(LOG, data={"event": "saved"})])
    assert source.logs() == []  # running: the aggregator's (empty) answer stands
    sink.mirror.apply([ProgressEvent(RUN, status="SUCCEEDED")])
    assert [e["event"] for e in source.logs()] == ["saved"]  # finished, dropped: the copy answers
    answers["logs"] = [{"event": "from-aggregator"}]
    assert source.logs() == [{"event": "from-aggregator"}]  # while the aggregator holds it, it wins


def test_overlapping_runs_env_never_leaks_whatever_order_they_end(monkeypatch):
    """Two runs in one process with different ``env=``: while both run the newer value
    holds; once both ended, the variable is what it was before either."""
    from synapse_ray.runtime.env import applied_env

    monkeypatch.setenv("SYNAPSE_TEST_KEPT", "before")
    monkeypatch.delenv("SYNAPSE_TEST_NEW", raising=False)
    for first_to_end in ("a", "b"):
        a = applied_env({"SYNAPSE_TEST_KEPT": "a", "SYNAPSE_TEST_NEW": "a"})
        b = applied_env({"SYNAPSE_TEST_KEPT": "b", "SYNAPSE_TEST_NEW": "b"})
        a.__enter__()
        b.__enter__()
        assert os.environ["SYNAPSE_TEST_KEPT"] == "b"
        (a if first_to_end == "a" else b).__exit__(None, None, None)
        assert os.environ["SYNAPSE_TEST_NEW"] == ("b" if first_to_end == "a" else "a")  # the open run's
        (b if first_to_end == "a" else a).__exit__(None, None, None)
        assert os.environ["SYNAPSE_TEST_KEPT"] == "before"
        assert "SYNAPSE_TEST_NEW" not in os.environ


def test_ray_log_lines_go_to_the_log_file_not_the_terminal(tmp_path, capfd):
    """What ``synapse-ray run --executor ray`` does without ``--verbose``: Ray's own logger
    (start-up lines, warnings; its children propagate to it) writes to a file."""
    import logging

    from synapse_ray.executors.ray.connect import route_ray_logs

    ray_logger = logging.getLogger("ray")
    saved = (list(ray_logger.handlers), ray_logger.propagate)
    try:
        route_ray_logs(tmp_path / "ray.log")
        logging.getLogger("ray._private.worker").warning("Started a local Ray instance (probe)")
        for handler in ray_logger.handlers:
            handler.flush()
        out, err = capfd.readouterr()
        assert "probe" not in out + err
        assert "Started a local Ray instance (probe)" in (tmp_path / "ray.log").read_text()
    finally:
        for handler in ray_logger.handlers:
            if handler not in saved[0]:
                handler.close()
        ray_logger.handlers[:] = saved[0]
        ray_logger.propagate = saved[1]


def test_a_tasks_copy_of_what_it_sent_rebuilds_the_run_folded_or_not(monkeypatch):
    """What a task returns of the events it sent (raw while few, folded once many) rebuilds
    the same state the aggregator built from them."""
    from concurrent.futures import Future

    from synapse_ray.executors.ray import transport
    from synapse_ray.executors.ray.transport import AggregatorRef, RaySink

    class Pushed:
        def future(self) -> Future:
            done: Future = Future()
            done.set_result(0)
            return done

    class Push:
        def remote(self, *args: object) -> Pushed:
            return Pushed()

    class Handle:
        push = Push()

    monkeypatch.setattr(transport, "COPY_FOLD_AT", 8)
    plan = ProgressPlan.from_weights([("load", 1.0), ("train", 3.0)])
    events = [
        ProgressEvent(PLAN, data=plan.to_data()),
        ProgressEvent(STEP, "load", 1, status="succeeded"),
        ProgressEvent(STEP, "train", 1, status="running"),
        *(ProgressEvent(PROGRESS, "train", 1, "train", i, 30) for i in range(1, 21)),
        ProgressEvent(LOG, data={"event": "epoch"}),
    ]
    truth = ProgressState(run_id="r")
    truth.apply(events)
    for sent_batches in ([events[:3]], [events[i : i + 3] for i in range(0, len(events), 3)]):
        sink = RaySink(AggregatorRef("agg", "ns", Handle()), "r")
        sink.keep_copy()
        for batch in sent_batches:
            sink.send(batch)
        copy = ProgressState(run_id="r")
        sent = sink.take_sent()
        copy.apply(sent)
        expected = ProgressState(run_id="r")
        expected.apply([e for batch in sent_batches for e in batch])
        assert copy.snapshot().model_dump(exclude={"updated_at"}) == expected.snapshot().model_dump(
            exclude={"updated_at"}
        )
    assert len(sent) < len(events)  # the long one was folded
    assert copy.snapshot().steps["train"].percent == truth.snapshot().steps["train"].percent
