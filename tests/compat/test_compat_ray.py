"""The same upstream-style plugins on Ray: one task, and one actor per step.

Log entries, their files and metrics reach the backend through the Ray
aggregator, the run's single writer.
"""

from __future__ import annotations

import pytest

from synapse_ray import RayExecutor
from synapse_ray.backend import BackendClient
from synapse_ray.runtime.run_log import decode_data_uri
from tests.compat.conftest import job_logs, job_record, new_job
from tests.compat.plugins import CurrentShapeTrain, DevGuideTrain, DictParamsTrain

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def test_dev_guide_simple_action_on_a_ray_task(backend):
    job_id = new_job(backend["spec"])
    with RayExecutor(backend=backend["spec"], mode="task") as ex:
        handle = ex.submit(DevGuideTrain, {"dataset_id": backend["dataset_id"], "epochs": 2}, job_id=job_id)
        result = handle.result(timeout=120)
    with BackendClient(backend["spec"]) as client:
        assert client.get_model(result["model_id"])["name"] == "trained-model"
    assert [e["event"] for e in job_logs(backend["spec"], job_id)] == ["train_complete"]
    assert job_record(backend["spec"], job_id)["metrics_record"] == {"train": {"epoch": 2, "loss": 0.5}}


def test_step_plugin_with_dict_params_and_files_on_step_actors(backend):
    job_id = new_job(backend["spec"])
    with RayExecutor(backend=backend["spec"], mode="actors", reuse_actors=False) as ex:
        handle = ex.submit(DictParamsTrain, {"epochs": 2, "tag": "ray"}, job_id=job_id)
        result = handle.result(timeout=120)
    assert result["steps_executed"] == 2
    logs = {e["event"]: e for e in job_logs(backend["spec"], job_id)}
    assert logs["weights_saved"]["step"] == "fit" and logs["config_written"]["step"] == "prepare"
    assert decode_data_uri(logs["weights_saved"]["file"]) == bytes(range(256)) * 4
    assert logs["message"]["data"]["content"] == "Preparing ray"
    record = job_record(backend["spec"], job_id)
    assert record["status"] == "succeeded" and record["metrics_record"]["fit"]["epoch"] == 2
    assert {e["event"] for e in handle.logs()} >= {"config_written", "weights_saved"}


def test_current_shape_action_on_step_actors(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNAPSE_RAY_CACHE_DIR", str(tmp_path / "cache"))
    params = {"dataset": backend["dataset_id"], "checkpoint": backend["checkpoint_id"], "epochs": 2}
    with RayExecutor(backend=backend["spec"], env={"SYNAPSE_RAY_CACHE_DIR": str(tmp_path / "cache")}) as ex:
        handle = ex.submit(CurrentShapeTrain, params)
        result = handle.result(timeout=120)
    assert result["steps_executed"] == 3 and result["model_id"] is not None
    assert list(handle.progress().steps) == ["dataset", "train", "model_upload"]
