"""``autolog('ultralytics')`` against a stand-in YOLO that fires ultralytics' callback names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from synapse_ray import ConfigurationError, LocalExecutor
from synapse_ray.runtime.run_log import decode_data_uri
from tests.compat.conftest import job_logs, job_record, new_job
from tests.compat.plugins import CurrentShapeTrain

STANDIN = str(Path(__file__).parent / "standin")


@pytest.fixture
def ultralytics_standin(monkeypatch):
    monkeypatch.syspath_prepend(STANDIN)
    monkeypatch.delitem(sys.modules, "ultralytics", raising=False)
    yield
    sys.modules.pop("ultralytics", None)


class AutologTrain(CurrentShapeTrain):
    """Upstream's recommended shape: autolog on, train, return nothing (weights come from autolog)."""

    def execute(self, data_path, checkpoint):
        from ultralytics import YOLO

        self.autolog("ultralytics")
        model = YOLO("yolov8n.pt")
        model.train(data=str(data_path), epochs=self.params.epochs, project=str(self.ctx.work_dir))
        return {}


def test_autolog_reports_epochs_metrics_and_uploads_the_weights(
    backend, ultralytics_standin, tmp_path, monkeypatch
):
    monkeypatch.setenv("SYNAPSE_RAY_CACHE_DIR", str(tmp_path / "cache"))
    job_id = new_job(backend["spec"])
    with LocalExecutor(backend=backend["spec"]) as ex:
        handle = ex.submit(AutologTrain, {"dataset": backend["dataset_id"], "epochs": 3}, job_id=job_id)
        result = handle.result(timeout=60)
    snap = handle.progress()
    assert snap.categories["train"].current == 3 and snap.categories["train"].total == 3
    assert snap.metrics["train.epoch"] == 3 and snap.metrics["train.box_loss"] == pytest.approx(1 / 3)
    assert snap.metrics["validation.mAP50"] == pytest.approx(0.3)
    logs = job_logs(backend["spec"], job_id)
    weights = [e for e in logs if e["event"] == "model_weights"]
    assert len(weights) == 1 and weights[0]["step"] == "train" and weights[0]["data"] == {"type": "best"}
    assert decode_data_uri(weights[0]["file"]) == b"best-weights"
    samples = [e for e in logs if e["event"] == "validation_samples"]
    assert [e["data"]["group"] for e in samples] == [1, 2, 3]
    assert job_record(backend["spec"], job_id)["metrics_record"]["validation"]["mAP50_95"] == pytest.approx(
        0.15
    )
    assert result["model_id"] is not None  # the weights dir autolog noted was uploaded


def test_unknown_framework_and_missing_package_are_clear_errors(monkeypatch):
    from synapse_ray.integrations import autolog

    with pytest.raises(ConfigurationError, match="Unknown autolog framework 'keras'"):
        autolog("keras", object())
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match="pip install ultralytics"):
        autolog("ultralytics", object())


def test_autolog_target_is_cleared_after_each_step_so_reused_workers_never_report_to_old_runs():
    from synapse_ray import BaseStep, BaseStepContext, RuntimeContext, StepResult
    from synapse_ray.runtime.autolog import AutologState, current, set_current
    from synapse_ray.steps.placement import execute_step

    class Enables(BaseStep):
        name = "enables"

        def execute(self, context):
            set_current(AutologState(action="an action"))
            assert current() is not None
            return StepResult()

    assert execute_step(Enables(), BaseStepContext(runtime_ctx=RuntimeContext())).success
    assert current() is None
