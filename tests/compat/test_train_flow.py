"""The current upstream shape, ``execute(data_path, checkpoint)``, end to end on the embedded backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synapse_ray import ConfigurationError, LocalExecutor, RuntimeContext
from synapse_ray.backend import BackendClient
from tests.compat.conftest import job_record, new_job
from tests.compat.plugins import CurrentShapeTrain, DevGuideTrain


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNAPSE_RAY_CACHE_DIR", str(tmp_path / "cache"))


def test_default_flow_exports_trains_and_uploads(backend):
    job_id = new_job(backend["spec"])
    params = {"dataset": backend["dataset_id"], "checkpoint": backend["checkpoint_id"], "epochs": 3}
    with LocalExecutor(backend=backend["spec"]) as ex:
        handle = ex.submit(CurrentShapeTrain, params, job_id=job_id)
        result = handle.result(timeout=60)
    assert result["success"] is True and result["steps_total"] == 3  # no target_format: no convert step
    snap = handle.progress()
    assert list(snap.steps) == ["dataset", "train", "model_upload"]
    assert [round(s.weight, 4) for s in snap.steps.values()] == [0.2, 0.75, 0.05]
    assert snap.categories["dataset"].current == 2 and snap.metrics["train.loss"] == pytest.approx(1 / 3)
    with BackendClient(backend["spec"]) as client:
        model = client.get_model(result["model_id"])
        assert result["model"]["id"] == result["model_id"]
        assert model["name"].startswith("compat-model_") and model["checkpoint"] == backend["checkpoint_id"]
        assert model["configuration"] == {"hyperparameter": {}}
        weights = client.download(
            model["file"], Path(handle.runtime.work_dir) / "dl", name=model["file_name"]
        )
    import zipfile

    with zipfile.ZipFile(weights) as zf:
        trained = json.loads(zf.read("best.json"))
    # execute saw the exported files and the extracted checkpoint
    assert trained == {"files": ["a.txt", "b.txt"], "start": {"epoch": 7}}
    record = job_record(backend["spec"], job_id)
    assert record["status"] == "succeeded"
    assert set(record["progress_record"]["steps"]) == {"dataset", "train", "model_upload"}


def test_target_format_adds_the_convert_step_and_hands_execute_the_config(backend):
    class Yolo(CurrentShapeTrain):
        target_format = "yolo"

        def execute(self, data_path, checkpoint):
            return {"seen": str(data_path), "checkpoint": checkpoint}

    with LocalExecutor(backend=backend["spec"]) as ex:
        handle = ex.submit(Yolo, {"dataset": backend["yolo_dataset_id"]})
        result = handle.result(timeout=60)
    snap = handle.progress()
    assert list(snap.steps) == ["dataset", "convert", "train", "model_upload"]
    assert snap.steps["convert"].weight == 0 and snap.steps["model_upload"].status.value == "skipped"
    assert result["steps_executed"] == 3 and result["steps_skipped"] == 1 and "model" not in result


def test_hyperparameters_are_flattened_and_tune_mode_is_refused_before_any_work():
    params = CurrentShapeTrain.validate_params({"dataset": 1, "hyperparameters": [{"epochs": 9, "lr": 0.1}]})
    assert params.epochs == 9 and params.lr == 0.1 and params.hyperparameters == [{"epochs": 9, "lr": 0.1}]
    with pytest.raises(ConfigurationError, match="tune mode .* is not supported yet"):
        LocalExecutor().submit(CurrentShapeTrain, {"dataset": 1, "is_tune": True})
    with pytest.raises(ConfigurationError, match="params.dataset .* is required"):
        LocalExecutor().submit(CurrentShapeTrain, {})


def test_get_checkpoint_prefers_the_context_then_fetches_extracts_and_caches(backend, tmp_path):
    ready = {"category": "base", "path": "/models/yolov8n.pt", "id": None, "name": "yolov8n"}
    action = DevGuideTrain({"dataset_id": 1}, RuntimeContext(checkpoint=ready))
    assert action.get_checkpoint() == ready
    assert DevGuideTrain({"dataset_id": 1}).get_checkpoint() is None

    rt = RuntimeContext(backend=backend["spec"])
    fetched = DevGuideTrain({"dataset_id": 1, "checkpoint": backend["checkpoint_id"]}, rt).get_checkpoint()
    assert fetched["category"] == "base" and fetched["name"] == "yolo-base"
    assert fetched["id"] == backend["checkpoint_id"]
    assert json.loads((Path(fetched["path"]) / "start.json").read_text()) == {"epoch": 7}
    assert Path(fetched["path"]).is_relative_to(tmp_path / "cache")
    (Path(fetched["path"]) / "marker").write_text("kept")  # a second resolve reuses the extracted copy
    again = DevGuideTrain({"dataset_id": 1, "checkpoint": backend["checkpoint_id"]}, rt).get_checkpoint()
    assert (Path(again["path"]) / "marker").read_text() == "kept"


def test_local_backend_keeps_the_model_fields_upstream_sends(backend):
    with BackendClient(backend["spec"]) as client:
        model = client.get_model(backend["checkpoint_id"])
        listed = client.list_models(category="base")
    assert model["category"] == "base" and model["task"] == "detect"
    assert [m["id"] for m in listed] == [backend["checkpoint_id"]]
