"""``synapse-ray submit | status | logs | stop | list`` against the real head."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from synapse_ray.cli import main
from synapse_ray.executors.ray.jobs_client import submission_record_path
from tests.conftest import REPO
from tests.jobs.conftest import PROJECT

pytestmark = [pytest.mark.jobs, pytest.mark.usefixtures("jobs_env")]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_submit_no_wait_then_attach_from_a_new_process_logs_status_and_list():
    spoofing = '{"value": 4, "spoof": true}'
    res = invoke(
        "submit",
        "job_actions.py:EchoAction",
        "--working-dir",
        str(PROJECT),
        "--params",
        spoofing,
        "--no-wait",
    )
    assert res.exit_code == 0, res.stderr
    sid = res.stdout.strip()
    assert sid.startswith("synapse-") and len(sid.split()) == 1

    waited = invoke(
        "submit", "job_actions.py:EchoAction", "--working-dir", str(PROJECT), "--params", '{"value": 8}'
    )
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout) == {"value": 16, "private_packages_here": []}
    assert "100.0% SUCCEEDED" in waited.stderr and "Running entrypoint" in waited.stderr

    # a new process re-attaches by submission id: verified progress and the typed result
    script = (
        "from synapse_ray.executors.ray.jobs import RayJobExecutor\n"
        f"h = RayJobExecutor().attach({sid!r})\n"
        "print(h.result(timeout=120)['value'], h.status().value, h.progress().overall)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8", "SUCCEEDED", "100.0"]

    logs = invoke("logs", sid, "--follow")  # drains to the end of the job
    assert logs.exit_code == 0
    assert "RESULT: -1" in logs.stdout and "@@synapse-ray-record@@" not in logs.stdout

    status = invoke("status", sid)
    assert status.exit_code == 0
    assert f"Status for job '{sid}': SUCCEEDED" in status.stdout and "100.0%" in status.stdout

    # without the submission's key (another machine), status says so and shows Ray's view
    record = submission_record_path(sid)
    record.rename(record.with_suffix(".away"))
    try:
        unverified = invoke("status", sid)
    finally:
        record.with_suffix(".away").rename(record)
    assert f"Status for job '{sid}': SUCCEEDED" in unverified.stdout
    assert "Warning: unverified" in unverified.stdout and "100.0%" not in unverified.stdout

    listed = invoke("list", "--action", "jobs_echo")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(sid))
    assert "jobs_echo" in row and "SUCCEEDED" in row and "100.0%" in row
    assert all("jobs_echo" in line for line in listed.stdout.splitlines()[1:])
    params_hash = row.split()[-1]
    rows = invoke("list", "--params-hash", params_hash).stdout.splitlines()[1:]
    assert any(r.startswith(sid) for r in rows) and all(r.endswith(params_hash) for r in rows)
    assert len(invoke("list").stdout.splitlines()) > len(rows) + 1  # the run with other params is left out


def test_bad_input_exits_2_with_a_clear_message():
    res = invoke(
        "submit", "job_actions.py:EchoAction", "--working-dir", str(PROJECT), "--params", '{"value": "x"}'
    )
    assert res.exit_code == 2 and "value" in res.stderr and res.stdout == ""
    for verb in ("status", "logs", "stop"):
        res = invoke(verb, "synapse-unknown")
        assert res.exit_code == 2, verb
        assert "No job with submission id 'synapse-unknown'" in res.stderr
