"""Train plugins written as synapse-sdk users write them; only the imports changed.

``DevGuideTrain`` and ``DevGuideStepsTrain`` follow the SDK developer guide's
simple and step-based examples; ``DictParamsTrain`` reads dict params and
logs with files; ``CurrentShapeTrain`` has the current upstream shape,
``execute(data_path, checkpoint)``. Ray workers import this module by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# upstream: from synapse_sdk.plugins.actions.train import BaseTrainAction, BaseTrainParams, TrainContext
# upstream: from synapse_sdk.plugins.steps import BaseStep, StepResult, StepRegistry
from synapse_ray import BaseStep, BaseTrainAction, BaseTrainParams, StepRegistry, StepResult, TrainContext

# upstream: from synapse_sdk.plugins.enums import PluginCategory
from synapse_ray.enums import PluginCategory

# upstream: from synapse_sdk.plugins.types import ModelWeights, YOLODataset
from synapse_ray.types import ModelWeights, YOLODataset


class MyTrainParams(BaseTrainParams):
    """Extends base with custom fields."""

    dataset_id: int
    epochs: int = 3


class DevGuideTrain(BaseTrainAction[MyTrainParams]):
    action_name = "train"
    category = PluginCategory.NEURAL_NET
    input_type = YOLODataset
    output_type = ModelWeights

    def execute(self) -> dict:
        dataset = self.get_dataset()  # Fetches params.dataset_id
        checkpoint = self.get_checkpoint()  # Optional resume
        self.set_progress(1, 3, self.progress.DATASET)
        out = Path(self.ctx.work_dir) / "model"
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.json").write_text(json.dumps({"files": len(dataset["file_specifications"])}))
        for epoch in range(1, self.params.epochs + 1):
            self.set_progress(epoch, self.params.epochs, self.progress.TRAIN)
            self.set_metrics({"epoch": epoch, "loss": 1.0 / epoch}, "train")
        self.log("train_complete", {"final_loss": 1.0 / self.params.epochs})
        model = self.create_model(str(out), name="trained-model")
        self.set_progress(3, 3, self.progress.MODEL_UPLOAD)
        return {"model_id": model["id"], "checkpoint": checkpoint}


class LoadDatasetStep(BaseStep[TrainContext]):
    @property
    def name(self) -> str:
        return "load_dataset"

    @property
    def progress_weight(self) -> float:
        return 0.2

    def execute(self, context: TrainContext) -> StepResult:
        context.dataset = context.client.get_data_collection(context.params["dataset_id"])
        return StepResult(success=True, data={"count": len(context.dataset["file_specifications"])})


class TrainStep(BaseStep[TrainContext]):
    @property
    def name(self) -> str:
        return "train"

    @property
    def progress_weight(self) -> float:
        return 0.7

    def execute(self, context: TrainContext) -> StepResult:
        epochs = context.params.get("epochs", 100)
        for epoch in range(epochs):
            context.set_progress(epoch + 1, epochs)
            context.set_metrics({"epoch": epoch + 1, "loss": 1.0 / (epoch + 1)})
        return StepResult(success=True)


class DevGuideStepsTrain(BaseTrainAction[MyTrainParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        """Register workflow steps."""
        registry.register(LoadDatasetStep())
        registry.register(TrainStep())


class DictParams(BaseModel):
    epochs: int = 2
    lr: float = 0.1
    tag: str = "run"


class PrepareStep(BaseStep[TrainContext]):
    @property
    def name(self) -> str:
        return "prepare"

    @property
    def progress_weight(self) -> float:
        return 0.1

    def execute(self, context: TrainContext) -> StepResult:
        config = Path(context.runtime_ctx.work_dir) / "config.json"
        config.write_text(json.dumps(dict(context.params)))
        context.log("config_written", {"keys": sorted(context.params)}, file=str(config))
        context.log_message({"en": "Preparing {tag}", "ko": "{tag} 준비 중"}, tag=context.params["tag"])
        return StepResult(success=True, data={"config": str(config)})


class FitStep(BaseStep[TrainContext]):
    @property
    def name(self) -> str:
        return "fit"

    @property
    def progress_weight(self) -> float:
        return 0.9

    def execute(self, context: TrainContext) -> StepResult:
        epochs = context.params.get("epochs", 10)
        lr = context.params["lr"]
        weights = Path(context.runtime_ctx.work_dir) / "weights.bin"
        for epoch in range(1, epochs + 1):
            context.set_progress(epoch, epochs)
            context.set_metrics({"loss": lr / epoch, "epoch": epoch})
        weights.write_bytes(bytes(range(256)) * 4)
        context.log("weights_saved", {"epoch": epochs}, file=str(weights))
        context.log_dev_event("fit finished", {"epochs": epochs})
        context.model_path = str(weights)
        return StepResult(success=True, data={"epochs": epochs})


class DictParamsTrain(BaseTrainAction[DictParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(PrepareStep())
        registry.register(FitStep())


class CurrentParams(BaseTrainParams):
    epochs: int = 2
    name: str = "compat-model"


class CurrentShapeTrain(BaseTrainAction[CurrentParams]):
    """Upstream's current shape: the SDK exports the dataset, this trains, the SDK uploads."""

    def execute(self, data_path: Path, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        files = sorted(p.name for p in Path(data_path).rglob("*") if p.is_file())
        start = json.loads((Path(checkpoint["path"]) / "start.json").read_text()) if checkpoint else {}
        out = Path(self.ctx.work_dir) / "weights"
        out.mkdir(parents=True, exist_ok=True)
        for epoch in range(1, self.params.epochs + 1):
            self.set_progress(epoch, self.params.epochs, "train")
            self.log_metric("train", "epoch", epoch, loss=1.0 / epoch)
        (out / "best.json").write_text(json.dumps({"files": files, "start": start}))
        return {
            "weights_path": str(out),
            "files": files,
            "checkpoint_category": (checkpoint or {}).get("category"),
        }
