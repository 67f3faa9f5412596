"""The developer guide's plugins and a dict-params plugin, run in-process against a real backend."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from synapse_ray import BaseTrainAction, LocalExecutor, RuntimeContext, TrainContext
from synapse_ray.runtime.run_log import decode_data_uri
from tests.compat.conftest import job_logs, job_record, new_job
from tests.compat.plugins import DevGuideStepsTrain, DevGuideTrain, DictParamsTrain


def test_dev_guide_simple_action_runs_unchanged(backend):
    with LocalExecutor(backend=backend["spec"]) as ex:
        handle = ex.submit(DevGuideTrain, {"dataset_id": backend["dataset_id"], "epochs": 4})
        result = handle.result(timeout=30)
    assert result["checkpoint"] is None
    snap = handle.progress()
    assert snap.categories["train"].current == 4 and snap.categories["model_upload"].current == 3
    assert snap.metrics["train.loss"] == 0.25
    assert [e["event"] for e in handle.logs()] == ["train_complete"]
    from synapse_ray.backend import BackendClient

    with BackendClient(backend["spec"]) as client:
        model = client.get_model(result["model_id"])
    assert model["name"] == "trained-model" and model["plugin"] == "train"


def test_dev_guide_step_based_action_reads_dict_params(backend):
    with LocalExecutor(backend=backend["spec"]) as ex:
        handle = ex.submit(DevGuideStepsTrain, {"dataset_id": backend["dataset_id"], "epochs": 5})
        result = handle.result(timeout=30)
    assert result["success"] is True and result["steps_executed"] == 2 and result["steps_total"] == 2
    snap = handle.progress()
    # set_progress without a category reports under the running step's name, as upstream
    assert snap.categories["train"].current == 5
    assert snap.metrics["train.epoch"] == 5 and snap.metrics["train.loss"] == 0.2
    assert snap.steps["load_dataset"].weight == pytest.approx(0.2 / 0.9)


def test_step_plugin_logs_with_files_reach_the_backend_through_the_single_writer(backend):
    job_id = new_job(backend["spec"])
    with LocalExecutor(backend=backend["spec"]) as ex:
        result = ex.execute(DictParamsTrain, {"epochs": 3, "tag": "nightly"}, job_id=job_id)
    assert result["steps_executed"] == 2
    logs = {e["event"]: e for e in job_logs(backend["spec"], job_id)}
    assert set(logs) >= {"config_written", "message", "weights_saved", "dev_event"}
    written = logs["config_written"]
    assert (written["job"], written["step"], written["level"]) == (str(job_id), "prepare", "info")
    assert written["data"] == {"keys": ["epochs", "lr", "tag"]} and written["datetime"].startswith("20")
    assert b'"tag": "nightly"' in decode_data_uri(written["file"])
    assert decode_data_uri(logs["weights_saved"]["file"]) == bytes(range(256)) * 4
    assert logs["message"]["data"] == {"content": "Preparing nightly", "context": "info"}
    assert logs["dev_event"]["level"] == "debug" and logs["dev_event"]["data"]["data"] == {"epochs": 3}
    record = job_record(backend["spec"], job_id)
    assert record["status"] == "succeeded"
    assert record["metrics_record"] == {"fit": {"loss": pytest.approx(0.1 / 3), "epoch": 3}}


def test_without_a_job_nothing_is_sent_and_the_run_still_logs_locally(backend):
    logged_before = len(job_logs(backend["spec"], 999))
    handle = LocalExecutor(backend=backend["spec"]).submit(DictParamsTrain, {"epochs": 1})
    assert handle.result(timeout=30)["steps_executed"] == 2
    entries = {e["event"]: e for e in handle.logs()}
    # no backend job: the file is not read, its path is kept for display
    assert Path(entries["weights_saved"]["file"]).name == "weights.bin"
    assert entries["weights_saved"]["job"] is None
    from synapse_ray.backend import BackendClient

    with BackendClient(backend["spec"]) as client:
        everything = client.request("GET", "logs/").json()["results"]
    assert not [e for e in everything if e.get("job") is None] and logged_before == 0


def test_params_reach_steps_as_a_dict_that_reads_as_attributes_and_pickles():
    seen = {}

    class Probe(DictParamsTrain):
        def create_context(self) -> TrainContext:
            ctx = super().create_context()
            seen["params"] = ctx.params
            return ctx

    LocalExecutor().execute(Probe, {"epochs": 1, "lr": 0.5})
    params = seen["params"]
    assert isinstance(params, dict) and params == {"epochs": 1, "lr": 0.5, "tag": "run"}
    assert params.get("epochs", 10) == 1 and params.lr == 0.5 and params["tag"] == "run"
    copy = pickle.loads(pickle.dumps(params))
    assert copy == params and copy.epochs == 1
    with pytest.raises(AttributeError, match="params has no field 'nope'"):
        _ = params.nope


def test_current_step_is_reset_after_the_run_and_set_while_steps_run():
    seen = {}

    class Probe(DictParamsTrain):
        def create_context(self) -> TrainContext:
            seen["ctx"] = super().create_context()
            return seen["ctx"]

    LocalExecutor().execute(Probe, {"epochs": 1})
    assert seen["ctx"].current_step is None
    assert [r.success for r in seen["ctx"].step_results] == [True, True]


def test_env_is_a_plugin_environment_usable_as_a_dict(monkeypatch):
    monkeypatch.setenv("SYNAPSE_COMPAT_FROM_OS", "7")
    rt = RuntimeContext(env={"BATCH": "32", "DEBUG": "yes", "TAGS": "a, b,,c", "RATE": "0.5"})
    env = rt.env
    assert env["BATCH"] == "32" and dict(env) == {
        "BATCH": "32",
        "DEBUG": "yes",
        "TAGS": "a, b,,c",
        "RATE": "0.5",
    }
    assert env.get_int("BATCH") == 32 and env.get_float("RATE") == 0.5 and env.get_bool("DEBUG") is True
    assert env.get_list("TAGS") == ["a", "b", "c"] and env.get_str("MISSING", "x") == "x"
    assert env.get_int("SYNAPSE_COMPAT_FROM_OS") == 7  # upstream's env is built from os.environ
    assert env.get_bool("NOPE", default=False) is False
    copy = pickle.loads(pickle.dumps(rt))
    assert type(copy.env).__name__ == "PluginEnvironment" and copy.env.get_int("BATCH") == 32


def test_action_surface_logger_log_message_and_both_log_metric_shapes():
    class Surface(DevGuideTrain):
        def execute(self) -> dict:
            assert self.logger is self.ctx.logger
            self.log_message("Epoch {n} done", n=2)
            self.log_message({"en": "Hello {who}", "ko": "안녕 {who}"}, level="success", who="you")
            self.log_metric("train", "epoch", 2, loss=0.5, acc=0.9)  # upstream shape
            self.log_metric("lr", 0.01, category="optim")  # our shape
            self.log_metric("step", 3, grad_norm=0.2)  # the neural_net template's shape: more metrics
            self.set_metrics({"mAP50": 0.7}, "validation")
            return {}

    handle = LocalExecutor().submit(Surface, {"dataset_id": 1})
    handle.result(timeout=30)
    entries = handle.logs()
    assert [e["data"].get("content") for e in entries if e["event"] == "message"] == [
        "Epoch 2 done",
        "Hello you",
    ]
    assert entries[1]["level"] == "success"
    metric = next(e for e in entries if e["event"] == "metric")
    assert metric["data"] == {
        "category": "train",
        "key": "epoch",
        "value": 2,
        "metrics": {"loss": 0.5, "acc": 0.9},
    }
    assert handle.progress().metrics == {
        "train.epoch": 2,
        "train.loss": 0.5,
        "train.acc": 0.9,
        "optim.lr": 0.01,
        "step": 3,
        "grad_norm": 0.2,
        "validation.mAP50": 0.7,
    }


def test_result_model_mismatch_warns_and_returns_unless_strict(capsys):
    from pydantic import BaseModel

    from synapse_ray import ConfigurationError

    class Out(BaseModel):
        weights_path: str

    class Loose(DevGuideTrain):
        result_model = Out

        def execute(self) -> dict:
            return {"weights": "x"}

    assert LocalExecutor().execute(Loose, {"dataset_id": 1}) == {"weights": "x"}
    captured = capsys.readouterr()
    assert "result_mismatch" in captured.err + captured.out  # wherever the app's pipeline writes
    with pytest.raises(ConfigurationError, match="does not match result_model"):
        LocalExecutor(strict_result=True).execute(Loose, {"dataset_id": 1})


def test_missing_dataset_id_is_a_configuration_error_and_no_client_is_a_runtime_error():
    from synapse_ray import ConfigurationError
    from synapse_ray.errors import NoBackendError

    class NoDataset(BaseTrainAction[DevGuideTrain.params_model]):  # type: ignore[name-defined]
        def execute(self) -> dict:
            return self.get_dataset()

    with pytest.raises(RuntimeError) as info:
        LocalExecutor().execute(NoDataset, {"dataset_id": 3})
    assert isinstance(info.value.__cause__, NoBackendError)
    bare = DevGuideTrain({"dataset_id": 1})
    bare.params = bare.params.model_copy(update={"dataset_id": None})
    with pytest.raises(ConfigurationError, match="dataset_id is required"):
        bare.get_dataset()
