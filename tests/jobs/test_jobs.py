"""``RayJobExecutor`` against a real ``ray start --head`` with token auth, through the Jobs HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from synapse_ray import (
    ClusterError,
    ConfigurationError,
    ParamsValidationError,
    RunCancelledError,
    RunStatus,
    StepError,
    TargetError,
)
from synapse_ray.backend import BackendSpec, get_client
from synapse_ray.cli import main
from synapse_ray.executors.ray.jobs import RayJobExecutor
from synapse_ray.executors.ray.jobs_packaging import DEFAULT_EXCLUDES, preflight
from tests.conftest import REPO
from tests.jobs.conftest import PROJECT, alive_actors_of_job, raw_client

pytestmark = [pytest.mark.jobs, pytest.mark.usefixtures("jobs_env")]


def test_steps_example_succeeds_with_progress_model_and_no_secret_anywhere(digits_backend, ray_head):
    server, dataset_id = digits_backend
    spec = BackendSpec(base_url=server.url, token=server.token)
    runner = RayJobExecutor(working_dir=REPO / "examples", backend=spec)
    handle = runner.submit("train_steps.py:DigitsStepTrainAction", {"dataset_id": dataset_id, "epochs": 3})
    seen, version = [], -1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        snap = handle.wait_for_update(version, timeout=1.0)
        version = snap.version
        seen.append((snap.status, snap.overall))
        if snap.status.is_terminal:
            break
    result = handle.result(timeout=60)
    assert result["success"] and result["steps_executed"] == 4  # load, preprocess, train, upload
    assert handle.status() is RunStatus.SUCCEEDED
    final = handle.progress()
    assert final.overall == 100.0 and set(final.steps) == {
        "load_dataset",
        "preprocess",
        "train",
        "upload_model",
    }
    assert any(status is RunStatus.RUNNING for status, _ in seen)  # followed while it ran
    models = get_client(spec).list_models()
    assert any(m["name"] == "digits-sgd-steps" for m in models)

    # the backend token appears nowhere Ray keeps or shows the job
    token = server.token
    client = raw_client(ray_head)
    info = client.get_job_info(handle.submission_id)
    listed = [j for j in client.list_jobs() if j.submission_id == handle.submission_id]
    logs = client.get_job_logs(handle.submission_id)
    for text in (repr(info), json.dumps(info.runtime_env), info.entrypoint, json.dumps(info.metadata)):
        assert token not in text
    assert listed and token not in repr(listed[0])
    assert token not in logs and "Running entrypoint" in logs
    assert token not in repr(handle) and token not in repr(runner.__dict__)
    # the private package file was read and deleted inside the cluster
    leftover = list(Path(ray_head.temp_dir).rglob(f"synapse_job_*{handle.run_id}/private.json"))
    assert leftover == []


def test_failing_step_is_failed_with_the_step_named():
    handle = RayJobExecutor(working_dir=PROJECT).submit(
        "job_actions.py:FailingStepsAction", {"message": "kaput"}
    )
    with pytest.raises(StepError) as info:
        handle.result(timeout=120)
    assert info.value.step == "explode" and "kaput" in str(info.value)
    assert handle.status() is RunStatus.FAILED
    assert handle.progress().steps["explode"].error == "ValueError: kaput"


def test_print_cannot_spoof_and_concurrent_submissions_keep_their_own_results():
    runner = RayJobExecutor(working_dir=PROJECT)
    first = runner.submit("job_actions.py:EchoAction", {"value": 3, "spoof": True})
    second = runner.submit("job_actions.py:EchoAction", {"value": 5, "spoof": True})
    assert first.submission_id != second.submission_id
    # the task sees no private package: it stays with the entrypoint (the driver)
    assert first.result(timeout=120) == {"value": 6, "private_packages_here": []}
    assert second.result(timeout=120) == {"value": 10, "private_packages_here": []}
    # user prints stay in the log (they reach it from the task's worker, a little later) ...
    deadline = time.monotonic() + 30
    while not any("RESULT: -1" in line for line in first.log_lines()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = first.log_lines()
    assert any("RESULT: -1" in line for line in lines)
    assert not any("@@synapse-ray-record@@" in line for line in lines)  # ... records do not
    assert first.source.reader.rejected >= 1  # the forged record was seen and refused


def test_stop_from_the_cli_rolls_back_and_leaves_no_actors(ray_head, tmp_path, digits_backend):
    server, _ = digits_backend
    client = get_client(server.spec)
    job = client.create_job({"action": "jobs_slow_steps"})
    notes = tmp_path / "notes.jsonl"
    handle = RayJobExecutor(working_dir=PROJECT, backend=server.spec).submit(
        "job_actions.py:SlowStepsAction", {"seconds": 120, "notes": str(notes)}, job_id=job["id"]
    )
    version, deadline = -1, time.monotonic() + 120
    while time.monotonic() < deadline:
        snap = handle.wait_for_update(version, timeout=1.0)
        version = snap.version
        if snap.current_step == "slow":
            break
    assert snap.current_step == "slow", snap
    started = time.monotonic()
    res = CliRunner().invoke(main, ["stop", handle.submission_id, "--grace", "30"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert f"Job '{handle.submission_id}': CANCELLED" in res.stdout
    assert time.monotonic() - started < 30  # cooperative: done before the grace ran out
    handle.wait(30)  # the submitting handle sees the same end
    assert handle.status() is RunStatus.CANCELLED
    snap = handle.progress()
    assert snap.status is RunStatus.CANCELLED
    assert snap.steps["prepare"].status.value == "rolled_back"
    record = client.get_job(job["id"])  # written in the cluster by the run's single writer
    assert record["status"] == "cancelled"
    assert record["progress_record"]["steps"]["prepare"]["status"] == "rolled_back"
    events = [json.loads(line) for line in notes.read_text().splitlines()]
    assert {"step": "slow", "event": "saw_cancel"} in events
    assert {"step": "prepare", "event": "rollback"} in events
    deadline = time.monotonic() + 30
    while alive_actors_of_job(ray_head, handle.job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive_actors_of_job(ray_head, handle.job_id) == []


def test_bad_input_fails_before_any_upload(ray_head, tmp_path, monkeypatch):
    client = raw_client(ray_head)
    before = len(client.list_jobs())
    runner = RayJobExecutor(working_dir=PROJECT)
    with pytest.raises(ParamsValidationError):
        runner.submit("job_actions.py:EchoAction", {"value": "not a number"})
    with pytest.raises(TargetError, match="not found inside working_dir"):
        runner.submit("nope.py:EchoAction", {})
    with pytest.raises(TargetError, match="outside working_dir"):
        runner.submit(str(REPO / "examples/train_simple.py") + ":DigitsTrainAction", {"dataset_id": 1})
    with pytest.raises(ConfigurationError, match="requirements file not found"):
        RayJobExecutor(working_dir=PROJECT, requirements=tmp_path / "missing.txt")
    # an oversize working dir: refused with its largest files (a sparse file costs no disk)
    big = tmp_path / "big"
    big.mkdir()
    (big / "job_actions.py").write_text((PROJECT / "job_actions.py").read_text())
    with open(big / "weights.bin", "wb") as fh:
        fh.truncate(600 * 2**20)
    with pytest.raises(ConfigurationError, match=r"too large.*weights\.bin \(600\.0 MiB\)"):
        RayJobExecutor(working_dir=big).submit("job_actions.py:EchoAction", {})
    # excluded files do not count
    report = preflight(big, [*DEFAULT_EXCLUDES, "*.bin"], limit=10**6)
    assert report.files == 1 and report.largest[0][1] == "job_actions.py"
    assert len(client.list_jobs()) == before


def test_cluster_and_auth_errors_say_what_to_do(ray_head, monkeypatch):
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"No Ray Jobs API at http://127.0.0.1:1 .*ray start --head"):
        RayJobExecutor(address="http://127.0.0.1:1", working_dir=PROJECT).submit("job_actions.py:EchoAction")
    assert time.monotonic() - started < 10
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong-token")
    with pytest.raises(ClusterError, match=r"refused our credentials.*RAY_AUTH_TOKEN"):
        RayJobExecutor(working_dir=PROJECT).submit("job_actions.py:EchoAction")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    with pytest.raises(ClusterError, match=r"refused our credentials.*RAY_AUTH_MODE=token"):
        RayJobExecutor(working_dir=PROJECT).submit("job_actions.py:EchoAction")
    with pytest.raises(ConfigurationError, match="No job with submission id 'synapse-nope'"):
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head.token_path))
        RayJobExecutor().attach("synapse-nope")


def test_ray_executor_on_the_token_auth_cluster(ray_head):
    """`synapse-ray run --executor ray --address` works with the token, and says why without it."""
    gcs = ray_head.gcs_address
    cmd = [str(Path(sys.executable).parent / "synapse-ray"), "run", "tests.core.actions:AddAction"]
    cmd += ["--executor", "ray", "--address", gcs, "--params", '{"a": 2, "b": 3}', "-q"]
    env = {k: v for k, v in ray_head.env().items() if k != "RAY_AUTH_MODE"}
    env["PYTHONPATH"] = str(REPO)
    run = {"capture_output": True, "text": True, "timeout": 120, "cwd": REPO}
    with ThreadPoolExecutor(2) as pool:  # Ray gives up on a refused handshake only after ~20 s
        ok_f = pool.submit(subprocess.run, cmd, env={**env, "RAY_AUTH_MODE": "token"}, **run)
        bad_f = pool.submit(subprocess.run, cmd, env=env, **run)
        ok, bad = ok_f.result(), bad_f.result()
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"sum": 5}
    assert bad.returncode != 0
    assert "RAY_AUTH_MODE=token" in bad.stderr and "token authentication" in bad.stderr


def test_rays_own_stop_is_a_cooperative_cancel_too(ray_head, tmp_path):
    """`ray job stop` (SIGTERM, SIGKILL 3 s later): the entrypoint still cancels, rolls back, reports."""
    notes = tmp_path / "notes.jsonl"
    handle = RayJobExecutor(working_dir=PROJECT).submit(
        "job_actions.py:SlowStepsAction", {"seconds": 120, "notes": str(notes)}
    )
    version, deadline = -1, time.monotonic() + 120
    while time.monotonic() < deadline:
        snap = handle.wait_for_update(version, timeout=1.0)
        version = snap.version
        if snap.current_step == "slow":
            break
    assert raw_client(ray_head).stop_job(handle.submission_id)
    with pytest.raises(RunCancelledError):
        handle.result(timeout=60)
    assert handle.status() is RunStatus.CANCELLED
    assert handle.source.reader.final is not None  # the entrypoint reported before Ray's SIGKILL
    events = [json.loads(line) for line in notes.read_text().splitlines()]
    assert {"step": "prepare", "event": "rollback"} in events
