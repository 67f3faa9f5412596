from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from synapse_ray import (
    ActionError,
    ContextPicklingError,
    LocalExecutor,
    RunCancelledError,
    RunStatus,
    StepError,
    StepStatus,
)
from synapse_ray.errors import ClusterError, ConfigurationError
from synapse_ray.executors.ray.executor import RayExecutor
from tests.ray.actions import (
    LockContextAction,
    NoRollbackAction,
    SetupFailsAction,
    SimpleRayAction,
    StepRayAction,
    read_notes,
)
from tests.ray.conftest import alive_actors, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def test_simple_action_runs_as_a_task_with_progress():
    handle = RayExecutor().submit(SimpleRayAction, {})
    result = handle.result(timeout=60)
    assert result["where"]["pid"] != os.getpid()
    snap = handle.progress()
    assert handle.status() is RunStatus.SUCCEEDED and snap.status is RunStatus.SUCCEEDED
    assert snap.overall == 100.0
    assert (snap.categories["train"].current, snap.categories["train"].total) == (2, 2)


def test_step_action_runs_one_actor_per_step_and_leaves_none(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False).submit(StepRayAction, {"log": log})
    result = handle.result(timeout=120)
    assert result["success"] and result["steps_executed"] == 3
    pids = {n["step"]: n["pid"] for n in read_notes(log)}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    snap = handle.progress()
    assert snap.overall == 100.0
    assert all(s.status is StepStatus.SUCCEEDED for s in snap.steps.values())
    assert {c: p.current for c, p in snap.categories.items()} == {"load": 3, "train": 3, "upload": 3}
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


def test_consecutive_identical_steps_reuse_one_actor(tmp_path):
    log = str(tmp_path / "log")
    RayExecutor(reuse_actors=True).execute(StepRayAction, {"log": log})
    assert len({n["pid"] for n in read_notes(log)}) == 1


def test_context_travels_to_actors_and_back(tmp_path):
    handle = RayExecutor(reuse_actors=False).submit(StepRayAction, {"log": str(tmp_path / "l")})
    handle.result(timeout=120)
    # each step appended to ctx.visited in its own process; the driver got it back each time
    notes = read_notes(tmp_path / "l")
    assert [n["step"] for n in notes] == ["load", "train", "upload"]


def test_forced_modes(tmp_path):
    log = str(tmp_path / "log")
    result = RayExecutor(mode="task").execute(StepRayAction, {"log": log})
    assert result["steps_executed"] == 3
    assert len({n["pid"] for n in read_notes(log)}) == 1  # all steps in the one task
    result = RayExecutor(mode="actors").execute(SimpleRayAction, {})
    assert result["where"]["pid"] != os.getpid()


def test_remote_exception_keeps_type_action_name_and_traceback():
    handle = RayExecutor().submit(SimpleRayAction, {"fail_at": "execute"})
    with pytest.raises(ActionError) as info:
        handle.result(timeout=60)
    err = info.value
    assert "Action 'simple_ray_action' failed: KeyError" in str(err)
    assert isinstance(err.__cause__, KeyError)
    assert "tests/ray/actions.py" in err.remote_traceback
    assert handle.status() is RunStatus.FAILED


def test_exception_in_step_3_rolls_back_3_2_1_on_their_own_actors(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False).submit(StepRayAction, {"log": log, "fail_at": "upload"})
    with pytest.raises(StepError) as info:
        handle.result(timeout=120)
    assert str(info.value) == "Step 'upload' failed: boom in upload"
    assert isinstance(info.value.__cause__, ValueError)
    notes = read_notes(log)
    ran = {n["step"]: n["pid"] for n in notes if n["event"] == "execute"}
    rolled = [(n["step"], n["pid"]) for n in notes if n["event"] == "rollback"]
    assert [s for s, _ in rolled] == ["upload", "train", "load"]
    assert all(pid == ran[step] for step, pid in rolled)
    assert handle.status() is RunStatus.FAILED
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


def test_step_actor_killed_mid_step_is_retried_and_progress_flows(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False, max_retries=0).submit(
        StepRayAction, {"log": log, "crash_once": "train"}
    )
    result = handle.result(timeout=120)
    assert result["success"]
    attempts = [n["attempt"] for n in read_notes(log) if n["step"] == "train"]
    assert attempts == [1, 2]
    snap = handle.progress()
    assert snap.steps["train"].attempt == 2 and snap.overall == 100.0


def test_task_worker_exiting_hard_is_retried_with_exactly_one_model(tmp_path, backend_server):
    marker = str(tmp_path / "crashed")
    client = backend_server.spec
    executor = RayExecutor(backend=client, max_retries=2)
    before = len(_models(backend_server))
    result = executor.execute(SimpleRayAction, {"crash_once": marker, "upload": True})
    assert os.path.exists(marker)  # the first attempt really died
    models = _models(backend_server)
    assert len(models) == before + 1
    assert models[-1]["id"] == result["model_id"]
    assert result["env_has_token"] is False  # the token reached the worker as an argument only


def _models(server):
    from synapse_ray.backend import BackendClient

    with BackendClient(server.spec) as client:
        return client.list_models()


def test_cancel_mid_step_rolls_back_and_leaves_zero_actors(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False).submit(StepRayAction, {"log": log, "wait_cancel_at": "train"})
    wait_until(lambda: any(n.get("step") == "train" for n in read_notes(log)), timeout=60)
    handle.cancel(grace_s=20)
    with pytest.raises(RunCancelledError):
        handle.result(timeout=60)
    assert handle.status() is RunStatus.CANCELLED
    notes = read_notes(log)
    assert not any(n.get("step") == "upload" for n in notes)
    assert [n["step"] for n in notes if n["event"] == "rollback"] == ["train", "load"]
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


def test_cancel_of_a_step_ignoring_the_flag_kills_it_after_grace(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False).submit(StepRayAction, {"log": log, "ignore_cancel_at": "train"})
    wait_until(lambda: any(n.get("step") == "train" for n in read_notes(log)), timeout=60)
    started = time.monotonic()
    handle.cancel(grace_s=1)
    with pytest.raises(RunCancelledError):
        handle.result(timeout=60)
    assert time.monotonic() - started < 30
    assert handle.status() is RunStatus.CANCELLED
    assert [n["step"] for n in read_notes(log) if n["event"] == "rollback"] == ["load"]
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


def test_cancel_task_mode(tmp_path):
    log = str(tmp_path / "log")
    handle = RayExecutor(mode="task").submit(StepRayAction, {"log": log, "wait_cancel_at": "train"})
    wait_until(lambda: any(n.get("step") == "train" for n in read_notes(log)), timeout=60)
    handle.cancel(grace_s=20)
    with pytest.raises(RunCancelledError):
        handle.result(timeout=60)
    assert [n["step"] for n in read_notes(log) if n["event"] == "rollback"] == ["train", "load"]


def test_steps_without_rollback_release_their_actor(tmp_path):
    handle = RayExecutor().submit(NoRollbackAction, {})
    assert handle.result(timeout=60)["success"]
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


def test_long_poll_streams_increasing_progress():
    handle = RayExecutor().submit(StepRayAction, {"slow_train_s": 1.5})
    snap = handle.progress()
    values = [snap.overall]
    deadline = time.monotonic() + 60
    while not snap.status.is_terminal and time.monotonic() < deadline:
        snap = handle.wait_for_update(snap.version, timeout=2)
        values.append(snap.overall)
    assert snap.status is RunStatus.SUCCEEDED
    assert values == sorted(values)  # overall never went backwards
    assert len({round(v) for v in values if 0 < v < 100}) >= 3  # intermediate values streamed
    assert values[-1] == 100.0


@pytest.mark.parametrize("make", [LocalExecutor, lambda: RayExecutor(mode="task"), RayExecutor])
def test_a_failing_setup_steps_fails_the_run_alike_in_every_executor(make):
    """The action's own code failing before any step (here ``setup_steps``): submit hands
    back a run, and result() raises ActionError with the user's error as its cause."""
    handle = make().submit(SetupFailsAction, {})
    with pytest.raises(ActionError, match="no such step config") as info:
        handle.result(timeout=60)
    assert isinstance(info.value.__cause__, KeyError)
    assert handle.status() is RunStatus.FAILED and handle.progress().status is RunStatus.FAILED


def test_reads_right_after_the_result_see_what_rode_back_with_it():
    """A task's last events come back with its result and are forwarded after the caller
    has it: every read of the ended run waits for them, never a half-told run."""
    ex = RayExecutor(mode="task")
    for i in range(4):
        handle = ex.submit(SimpleRayAction, {"log_event": f"done-{i}"})
        assert handle.result(timeout=60)["run_attempt"] == 1
        assert [(e["event"], e["data"]["attempt"]) for e in handle.logs()] == [(f"done-{i}", 1)]
        snap = handle.progress()
        assert snap.status is RunStatus.SUCCEEDED and snap.categories["train"].current == 2


# -- bad input --------------------------------------------------------------------
def test_unreachable_address_fails_fast_naming_it():
    started = time.monotonic()
    with pytest.raises(ClusterError, match="127.0.0.1:1 did not answer"):
        RayExecutor(address="127.0.0.1:1").submit(SimpleRayAction, {})
    assert time.monotonic() - started < 15


def test_http_address_is_refused_with_advice():
    with pytest.raises(ConfigurationError, match="RAY_API_SERVER_ADDRESS"):
        RayExecutor(address="http://127.0.0.1:8265").submit(SimpleRayAction, {})


def test_unsatisfiable_resources_name_the_missing_resource():
    with pytest.raises(ClusterError, match=r"GPU=1 \(largest on any node: 0\)"):
        RayExecutor(num_gpus=1).submit(SimpleRayAction, {})
    with pytest.raises(ClusterError, match=r"Step 'train' needs unicorn=1.*missing unicorn=1"):
        RayExecutor().submit(StepRayAction, {"pin": {"unicorn": 1}})
    assert not alive_actors("StepWorker")


def test_unpicklable_step_context_is_named_before_any_actor_starts():
    with pytest.raises(ContextPicklingError, match="Step 'load': TrainContext attribute 'lock'"):
        RayExecutor().submit(LockContextAction, {})
    assert not alive_actors("StepWorker")


def test_module_workers_cannot_import_gets_working_dir_advice(tmp_path, monkeypatch):
    pkg = tmp_path / "only_on_driver_mod.py"
    pkg.write_text(
        textwrap.dedent(
            """
        from synapse_ray import BaseTrainAction
        from tests.ray.actions import RayParams

        class Hidden(BaseTrainAction[RayParams]):
            def execute(self):
                return 1
        """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError) as info:
        RayExecutor().submit("only_on_driver_mod:Hidden", {})
    assert "Ray workers cannot import 'only_on_driver_mod'" in str(info.value)
    assert "working_dir" in str(info.value) and "py_modules" in str(info.value)
    sys.modules.pop("only_on_driver_mod", None)


def test_file_targets_ship_by_value(tmp_path):
    path = tmp_path / "file_action.py"
    path.write_text(
        textwrap.dedent(
            """
        from pydantic import BaseModel
        from synapse_ray import BaseTrainAction

        class P(BaseModel):
            x: int

        class Triple(BaseTrainAction[P]):
            def execute(self):
                return self.params.x * 3
        """
        )
    )
    assert RayExecutor().execute(f"{path}:Triple", {"x": 5}) == 15


def test_secrets_are_refused_in_runtime_env():
    with pytest.raises(ConfigurationError, match="must not carry secrets"):
        RayExecutor(runtime_env={"env_vars": {"SYNAPSE_ACCESS_TOKEN": "x"}})


def test_bad_options():
    with pytest.raises(ConfigurationError, match="mode must be one of auto, task, actors"):
        RayExecutor(mode="fast")
    with pytest.raises(ConfigurationError, match="num_cpus must be a number >= 0"):
        RayExecutor(num_cpus=-1)


def test_runtime_env_env_vars_holding_the_token_value_are_refused():
    from synapse_ray import BackendSpec

    spec = BackendSpec(base_url="http://127.0.0.1:9/", token="tok-abcdef123")
    with pytest.raises(ConfigurationError, match=r"must not carry secrets \(HIDDEN\)"):
        RayExecutor(backend=spec, runtime_env={"env_vars": {"HIDDEN": "Token tok-abcdef123"}})
    with pytest.raises(ConfigurationError, match=r"must not carry secrets \(MY_API_KEY\)"):
        RayExecutor(runtime_env={"env_vars": {"MY_API_KEY": "x"}})


def test_runtime_env_with_local_paths_after_connecting_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigurationError, match=r"runtime_env with local paths .* first connects to Ray"):
        RayExecutor(runtime_env={"working_dir": str(tmp_path)}).submit(SimpleRayAction, {})


def test_the_advice_works_py_modules_ships_the_code(tmp_path):
    """A fresh driver whose code exists only locally ships it with runtime_env py_modules."""
    import subprocess

    pkg = tmp_path / "shipped_pkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
        from pydantic import BaseModel
        from synapse_ray import BaseTrainAction

        class P(BaseModel):
            x: int = 2

        class Shipped(BaseTrainAction[P]):
            def execute(self):
                return self.params.x * 10
        """
        )
    )
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import ray
        from synapse_ray import RayExecutor
        ex = RayExecutor(address="local", runtime_env={{"py_modules": [{str(pkg)!r}]}}, num_cpus=1)
        print("RESULT", ex.execute("shipped_pkg_xyz:Shipped", {{"x": 4}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240
    )
    assert "RESULT 40" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the raylet's /proc environ")
def test_a_local_instance_keeps_the_workers_a_steps_fan_out_needs():
    """A fresh driver's local Ray keeps CPUs + 1 idle workers: a second fan-out from a task,
    after Ray's idle-worker timeout (1 s), runs at full width on the processes of the first."""
    import subprocess

    script = textwrap.dedent(
        """
        import os, time
        import ray
        from synapse_ray.executors.ray.connect import SOFT_LIMIT_ENV, ensure_ray

        ensure_ray("local")
        cpus = int(ray.cluster_resources()["CPU"])
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
        with open(f"/proc/{raylet}/environ") as fh:
            env = dict(kv.split("=", 1) for kv in fh.read().split("\\0") if "=" in kv)
        print("RAYLET", env.get(SOFT_LIMIT_ENV), "CPUS", cpus, "DRIVER", os.environ.get(SOFT_LIMIT_ENV))

        @ray.remote
        def shard():
            time.sleep(0.3)
            return os.getpid()

        @ray.remote
        def step():
            return {os.getpid(), *ray.get([shard.remote() for _ in range(cpus)])}

        first = ray.get(step.remote())
        time.sleep(2.5)  # the raylet stops idle workers beyond its soft limit after 1 s
        second = ray.get(step.remote())
        print("PIDS", len(first), len(second), "NEW", len(second - first))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_num_workers_soft_limit")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240
    )
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert "RAYLET" in out and "PIDS" in out, proc.stderr[-3000:]
    limit, _, cpus, _, driver = out["RAYLET"].split()
    assert (int(limit), driver) == (int(cpus) + 1, "None")
    # at Ray's default the extra worker is gone: the second fan-out's shards wait for one
    # another (or for a new process), on fewer processes than CPUs + 1
    assert out["PIDS"] == f"{int(cpus) + 1} {int(cpus) + 1} NEW 0", proc.stdout


def test_aggregator_writes_the_run_to_its_backend_job(backend_server):
    from synapse_ray.backend import BackendClient

    with BackendClient(backend_server.spec) as client:
        job = client.create_job({"action": "step_ray_action"})
        handle = RayExecutor(backend=backend_server.spec).submit(StepRayAction, {}, job_id=job["id"])
        assert handle.result(timeout=120)["success"]
        record = wait_until(
            lambda: (r := client.get_job(job["id"]))["status"] == "succeeded" and r, timeout=30
        )
    assert record["progress_record"]["overall"] == 100.0
    assert record["progress_record"]["run_id"] == handle.run_id
    assert set(record["progress_record"]["steps"]) == {"load", "train", "upload"}
