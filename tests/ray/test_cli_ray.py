"""`synapse-ray run --executor ray`, in-process, on the shared Ray instance."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from synapse_ray.cli import main
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

STEPS = str(REPO / "examples/train_steps.py") + ":DigitsStepTrainAction"


@pytest.mark.parametrize("mode", ["auto", "task"])
def test_cli_runs_on_ray_with_progress(digits_backend, mode):
    server, dataset_id = digits_backend
    env = {"SYNAPSE_HOST": server.url, "SYNAPSE_ACCESS_TOKEN": server.token}
    res = CliRunner().invoke(
        main,
        [
            "run",
            STEPS,
            "--executor",
            "ray",
            "--mode",
            mode,
            "--num-cpus",
            "1",
            "--params",
            json.dumps({"dataset_id": dataset_id, "epochs": 2}),
        ],
        env=env,
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["success"] and out["steps_executed"] == 4  # load, preprocess, train, upload
    assert "100.0% SUCCEEDED" in res.stderr
    assert server.token not in res.stdout + res.stderr


def test_cli_ray_options_need_the_ray_executor():
    res = CliRunner().invoke(main, ["run", "tests.core.actions:AddAction", "--mode", "task"])
    assert res.exit_code == 2 and "--mode only apply with --executor ray" in res.stderr


def test_cli_reports_unsatisfiable_resources(digits_backend):
    server, dataset_id = digits_backend
    env = {"SYNAPSE_HOST": server.url, "SYNAPSE_ACCESS_TOKEN": server.token}
    res = CliRunner().invoke(
        main,
        [
            "run",
            STEPS,
            "--executor",
            "ray",
            "--num-gpus",
            "3",
            "--params",
            json.dumps({"dataset_id": dataset_id}),
        ],
        env=env,
    )
    assert res.exit_code == 2
    assert "needs GPU=3" in res.stderr and res.stdout == ""
