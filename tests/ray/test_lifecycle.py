"""The run lifecycle on Ray: runs finish on their own, survive a lost aggregator,
type worker deaths, count crash retries per mode, and carry context and env."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from synapse_ray import RunStatus, StepError, StepStatus, WorkerCrashedError
from synapse_ray.backend import BackendClient
from synapse_ray.cli import main
from synapse_ray.errors import ProgressUnavailableError
from synapse_ray.executors.ray.aggregator import NAMESPACE
from synapse_ray.executors.ray.executor import RayExecutor
from synapse_ray.executors.ray.source import AggregatorSource
from synapse_ray.executors.ray.transport import AggregatorRef
from tests.ray.actions import SimpleRayAction, StepRayAction, StepRayActionPlain, read_notes
from tests.ray.conftest import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def _new_job(server) -> int:
    with BackendClient(server.spec) as client:
        return client.create_job({"action": "lifecycle"})["id"]


def _record(server, job_id: int) -> dict:
    with BackendClient(server.spec) as client:
        return client.get_job(job_id)


def test_task_run_nobody_polls_still_writes_its_final_job_record(backend_server):
    job_id = _new_job(backend_server)
    handle = RayExecutor(backend=backend_server.spec).submit(SimpleRayAction, {}, job_id=job_id)
    # nothing reads the handle: the run must finish on its own
    record = wait_until(
        lambda: (r := _record(backend_server, job_id))["status"] == "succeeded" and r, timeout=60
    )
    assert record["progress_record"]["overall"] == 100.0
    assert record["progress_record"]["steps"]["execute"]["status"] == "succeeded"
    del handle


def _kill_aggregator_in_train(
    backend_server, tmp_path, slow_train_s: float, restart: bool, mode: str = "actors", **params
):
    """A 3-step run with a job (an actor per step, or all in one task); its aggregator
    killed while 'train' runs."""
    import ray

    log = str(tmp_path / "log")
    job_id = _new_job(backend_server)
    executor = RayExecutor(backend=backend_server.spec, reuse_actors=False, mode=mode)
    handle = executor.submit(
        StepRayAction, {"log": log, "slow_train_s": slow_train_s, **params}, job_id=job_id
    )
    wait_until(lambda: any(n.get("step") == "train" for n in read_notes(log)), timeout=60)
    name = handle.source.aggregator.name
    actor = ray.get_actor(name, namespace=NAMESPACE)
    ray.kill(actor, no_restart=not restart)
    return handle, job_id, name, actor


def test_run_completes_when_its_aggregator_is_killed_mid_run(backend_server, tmp_path):
    handle, job_id, name, _ = _kill_aggregator_in_train(backend_server, tmp_path, 2.0, restart=False)

    result = handle.result(timeout=120)
    assert result["success"] and result["steps_executed"] == 3
    assert handle.status() is RunStatus.SUCCEEDED
    snap = handle.progress()  # read from the driver's copy: the aggregator is gone
    assert snap.status is RunStatus.SUCCEEDED and snap.overall == 100.0
    record = _record(backend_server, job_id)
    assert record["status"] == "succeeded"
    assert {s["status"] for s in record["progress_record"]["steps"].values()} == {"succeeded"}
    # the next run on this driver gets a new aggregator under a new name
    handle2 = RayExecutor().submit(SimpleRayAction, {})
    assert handle2.result(timeout=60)["where"]
    assert handle2.source.aggregator.name != name
    assert handle2.progress().status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("restart", [False, True], ids=["killed", "restarted"])
def test_a_task_run_keeps_its_whole_record_when_its_aggregator_dies(backend_server, tmp_path, restart):
    """In task mode the plan, step events and logs go from the worker straight to the
    aggregator; the task returns their folded state with its result, so the driver's copy
    can write (or re-seed) the whole record."""
    handle, job_id, _, _ = _kill_aggregator_in_train(backend_server, tmp_path, 2.0, restart, mode="task")

    result = handle.result(timeout=120)
    assert result["success"] and result["steps_executed"] == 3
    snap = handle.progress()
    assert snap.status is RunStatus.SUCCEEDED and snap.overall == 100.0
    assert {name: s.status for name, s in snap.steps.items()} == dict.fromkeys(
        ("load", "train", "upload"), StepStatus.SUCCEEDED
    )
    record = _record(backend_server, job_id)
    assert record["status"] == "succeeded"
    steps = record["progress_record"]["steps"]
    assert sorted(steps) == ["load", "train", "upload"]
    assert {s["status"] for s in steps.values()} == {"succeeded"}


def test_a_failed_task_run_keeps_its_steps_in_the_record_when_its_aggregator_is_killed(
    backend_server, tmp_path
):
    """A failing task hands what it sent back on its exception: the record the driver
    writes itself still shows what each step went through."""
    handle, job_id, _, _ = _kill_aggregator_in_train(
        backend_server, tmp_path, 1.0, restart=False, mode="task", fail_at="train"
    )
    with pytest.raises(StepError, match="boom in train") as info:
        handle.result(timeout=120)
    assert not hasattr(info.value, "_synapse_ray_sent")  # the copy is ours, taken off
    record = _record(backend_server, job_id)
    assert record["status"] == "failed"
    steps = record["progress_record"]["steps"]
    # 'train' failed on both its attempts; it and 'load' were rolled back; 'upload' never ran
    assert {name: (st["status"], st["attempt"]) for name, st in steps.items()} == {
        "load": ("rolled_back", 1),
        "train": ("rolled_back", 2),
        "upload": ("pending", 0),
    }


def test_step_actors_logs_survive_an_aggregator_killed_mid_run(backend_server, tmp_path):
    """A step actor's log entries go straight to the aggregator; each step hands back what
    it reported, so the driver's copy (read once the aggregator is gone) has them all."""
    import ray

    executor = RayExecutor(reuse_actors=False)
    params = {"log": str(tmp_path / "log"), "slow_train_s": 2.0, "log_event": "step_began"}
    handle = executor.submit(StepRayAction, params)
    actor = ray.get_actor(handle.source.aggregator.name, namespace=NAMESPACE)

    def logged_steps() -> set[str]:
        return {e["data"]["step"] for e in ray.get(actor.logs.remote(handle.run_id), timeout=5)}

    wait_until(lambda: logged_steps() == {"load", "train"}, timeout=60)  # sent, not in a tail
    ray.kill(actor, no_restart=True)
    assert handle.result(timeout=120)["success"]
    assert [e["data"]["step"] for e in handle.logs()] == ["load", "train", "upload"]


def test_unreachable_aggregator_without_a_copy_is_a_library_error():
    import ray

    @ray.remote(num_cpus=0)
    class Gone:
        def ping(self):
            return True

        def snapshot(self, run_id):
            return None

    actor = Gone.options(name="gone-aggregator", namespace=NAMESPACE).remote()
    ray.get(actor.ping.remote())
    ray.kill(actor)

    def dead() -> bool:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return True
        return False

    wait_until(dead, timeout=30)  # ray.kill returns before the actor is gone
    source = AggregatorSource(AggregatorRef("gone-aggregator", NAMESPACE, actor), "run-x")
    with pytest.raises(ProgressUnavailableError, match="gone-aggregator"):
        source.snapshot()


@pytest.mark.parametrize("mode", ["task", "actors"])
def test_a_worker_that_dies_raises_worker_crashed_with_its_cause(mode, tmp_path):
    from ray.exceptions import RayError

    if mode == "task":
        action, params = SimpleRayAction, {"crash_once": str(tmp_path / "crashed")}
    else:
        action, params = StepRayActionPlain, {"crash_once": "train", "log": str(tmp_path / "log")}
    handle = RayExecutor(mode=mode, max_retries=0, reuse_actors=False).submit(action, params)
    with pytest.raises(WorkerCrashedError) as info:
        handle.result(timeout=120)
    chain, err = [], info.value.__cause__
    assert err is not None
    while err is not None:
        chain.append(err)
        err = err.__cause__
    assert any(isinstance(e, RayError) for e in chain)  # Ray's own error is kept, not dropped
    assert handle.status() is RunStatus.FAILED
    if mode == "actors":
        assert info.value.step == "train"


def test_task_mode_crash_retry_is_a_new_run_attempt(tmp_path):
    marker = tmp_path / "crashed"
    handle = RayExecutor(mode="task", max_retries=1).submit(SimpleRayAction, {"crash_once": str(marker)})
    result = handle.result(timeout=120)
    assert marker.exists()  # the first attempt really died
    assert result["run_attempt"] == 2
    snap = handle.progress()
    assert snap.run_attempt == 2 and snap.status is RunStatus.SUCCEEDED
    assert snap.steps["execute"].attempt == 1  # the step's own count restarts within the new run attempt


def test_actor_mode_crash_retry_is_a_new_step_attempt(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(max_retries=1, reuse_actors=False).submit(
        StepRayActionPlain, {"crash_once": "train", "log": log}
    )
    assert handle.result(timeout=120)["success"]
    assert [n["attempt"] for n in read_notes(log) if n["step"] == "train"] == [1, 2]
    snap = handle.progress()
    assert snap.steps["train"].attempt == 2 and snap.steps["train"].status is StepStatus.SUCCEEDED
    assert snap.run_attempt == 1


def test_context_set_on_one_actor_reaches_later_steps_and_the_result(tmp_path):
    log = str(tmp_path / "log")
    result = RayExecutor(reuse_actors=False).execute(StepRayActionPlain, {"log": log})
    notes = {n["step"]: n for n in read_notes(log)}
    assert len({n["pid"] for n in notes.values()}) == 3  # three processes
    assert notes["load"]["seen"] == []
    assert notes["upload"]["seen"] == ["load", "train"]  # set on two other actors, merged on the driver
    assert result["visited"] == ["load", "train", "upload"]


@pytest.mark.parametrize("mode", ["task", "actors"])
def test_env_is_set_where_the_action_code_runs_and_only_there(mode, tmp_path):
    log = str(tmp_path / "log")
    action = SimpleRayAction if mode == "task" else StepRayActionPlain
    result = RayExecutor(mode=mode, env={"SYNAPSE_TEST_ENV": "on"}).execute(action, {"log": log})
    seen = [n["env"] for n in read_notes(log) if "step" in n] if mode == "actors" else [result["env"]]
    assert seen and set(seen) == {"on"}
    # a later run on the same (reused) workers without env= does not see it
    log2 = str(tmp_path / "log2")
    result = RayExecutor(mode=mode).execute(action, {"log": log2})
    seen = [n["env"] for n in read_notes(log2) if "step" in n] if mode == "actors" else [result["env"]]
    assert set(seen) == {None}


def test_cli_with_job_id_prints_exactly_one_json_document(backend_server):
    job_id = _new_job(backend_server)
    env = {"SYNAPSE_HOST": backend_server.url, "SYNAPSE_ACCESS_TOKEN": backend_server.token}
    res = CliRunner().invoke(
        main,
        [
            "run",
            "tests.ray.actions:SimpleRayAction",
            "--executor",
            "ray",
            "--job-id",
            str(job_id),
            "--params",
            json.dumps({"shout": "hello from the worker"}),
        ],
        env=env,
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)  # exactly one document: nothing else on stdout
    assert out["run_attempt"] == 1
    assert "Ray's own log lines go to" in res.stderr  # where they go: checked by a core test
    assert _record(backend_server, job_id)["status"] == "succeeded"


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_cancel_during_a_backend_backoff_returns_within_two_seconds(executor, backend_server, tmp_path):
    from synapse_ray import LocalExecutor

    log = str(tmp_path / "log")
    spec = backend_server.spec.model_copy(update={"backoff": 60.0, "max_retries": 5})
    backend_server.faults.clear()
    backend_server.faults.add("status", status=503, count=50, path_prefix="jobs/")
    runner = LocalExecutor(backend=spec) if executor == "local" else RayExecutor(backend=spec)
    try:
        _cancel_in_backoff(runner, backend_server, log)
    finally:
        backend_server.faults.clear()


def _cancel_in_backoff(runner, backend_server, log) -> None:
    from synapse_ray import RunCancelledError
    from synapse_ray.backend import ServerError
    from tests.ray.actions import BackoffAction

    handle = runner.submit(BackoffAction, {"log": log})
    wait_until(lambda: read_notes(log), timeout=60)
    # the first 503 has been answered: the run now waits out a 48-72 s backoff
    wait_until(lambda: any("jobs/" in str(r) for r in backend_server.faults.requests), timeout=30)
    started = time.monotonic()
    handle.cancel(grace_s=30)
    with pytest.raises(RunCancelledError) as info:
        handle.result(timeout=30)
    assert time.monotonic() - started < 2.0
    causes, err = [], info.value
    while err is not None:
        causes.append(err)
        err = err.__cause__
    assert any(isinstance(e, ServerError) for e in causes)


def test_a_sink_learns_that_batches_landed_without_asking_ray_and_keeps_their_flags():
    """A worker hands back only the refs of batches still in flight, and the
    driver's ``sync`` still sees the flags of batches that landed before it."""
    import uuid

    from synapse_ray.executors.ray.aggregator import get_aggregator
    from synapse_ray.executors.ray.transport import NEEDS_SEED, RaySink
    from synapse_ray.runtime.progress import RUN, ProgressEvent

    name, handle = get_aggregator()
    sink = RaySink(AggregatorRef(name, NAMESPACE, handle), f"sink-{uuid.uuid4().hex[:8]}")
    # a final status for a run this aggregator never saw a plan of: it answers NEEDS_SEED
    sink.send([ProgressEvent(RUN, status=RunStatus.SUCCEEDED.value)])
    wait_until(lambda: all(landed.done() for _, landed in sink._in_flight), timeout=30)
    assert sink.sync() == NEEDS_SEED
    sink.send([ProgressEvent(RUN, status=RunStatus.SUCCEEDED.value)])
    wait_until(lambda: all(landed.done() for _, landed in sink._in_flight), timeout=30)
    assert sink.take_in_flight() == []
    assert sink.sync() == 0  # handed over: nothing left to wait for


@pytest.mark.parametrize("mode", ["actors", "task"])
def test_the_run_is_built_once_and_the_context_validated_is_the_one_that_runs(mode, tmp_path):
    """Choosing the mode and validating the steps run no user code twice (the driver used to
    call setup_steps just to choose the mode, and create_context once to check and again to run)."""
    from tests.ray.actions import CountingStepAction

    CountingStepAction.calls.clear()
    result = RayExecutor(mode=mode).execute(CountingStepAction, {"log": str(tmp_path / "notes")})
    assert result["visited"] == ["load", "train", "upload"]
    # on the driver: once in actor mode (it runs the orchestrator), never in task mode
    assert CountingStepAction.calls == (["setup_steps", "create_context"] if mode == "actors" else [])


def test_a_restarted_aggregator_is_reseeded_mid_run_and_the_run_completes(backend_server, tmp_path):
    """Ray restarts the aggregator with empty state (``max_restarts=-1``). The driver
    re-seeds it from its own copy when it next reads, so the live view (and the job
    record's writer) come back before the run ends; the result and final record are right."""
    import ray

    handle, job_id, name, actor = _kill_aggregator_in_train(backend_server, tmp_path, 12.0, restart=True)

    def restarted_and_empty() -> bool:
        try:
            return ray.get(actor.snapshot.remote(handle.run_id), timeout=5).steps == {}
        except ray.exceptions.RayActorError:
            return False  # still restarting

    wait_until(restarted_and_empty, timeout=60)
    live = wait_until(lambda: (s := handle.progress()).steps and s, timeout=30)  # re-seeded
    assert not handle.done(), "the run ended before the re-seed could be seen"
    assert live.steps["load"].status is StepStatus.SUCCEEDED
    assert live.steps["train"].status is StepStatus.RUNNING

    result = handle.result(timeout=120)
    assert result["success"] and result["steps_executed"] == 3
    snap = handle.progress()
    assert snap.status is RunStatus.SUCCEEDED and snap.overall == 100.0
    assert handle.source.aggregator.name == name  # the same actor, restarted: not given up on
    record = _record(backend_server, job_id)
    assert record["status"] == "succeeded"
    assert {s["status"] for s in record["progress_record"]["steps"].values()} == {"succeeded"}
