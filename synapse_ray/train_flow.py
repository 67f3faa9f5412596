"""Upstream's current train flow: export, convert, train, upload.

A train action whose ``execute`` takes ``(data_path, checkpoint)`` and that
does not override ``setup_steps`` runs these steps, as upstream wires them:

- ``dataset`` (20 %): ``action.export_dataset(dest)`` writes the dataset's files
  into a local directory (default: the backend data collection ``params.dataset``);
- ``convert`` (0 %, only when the action sets ``target_format``):
  ``action.convert_dataset(path, target_format)``;
- ``train`` (75 %): ``action.execute(data_path, checkpoint)``;
- ``model_upload`` (5 %): uploads the returned ``weights_path`` as a model.

The steps that call the action pickle as its class and params and rebuild it
around the context's runtime wherever they run (a step actor), like a simple
action's one step.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from pathlib import Path
from typing import Any

from synapse_ray.steps.step import BaseStep, StepResult

PROPORTIONS = {"dataset": 20, "convert": 0, "train": 75, "model_upload": 5}


@functools.cache
def takes_data_path(cls: type) -> bool:
    """Whether ``cls.execute`` has upstream's current shape, ``execute(self, data_path, checkpoint)``.

    Cached per class: it is asked on every run, and ``inspect.signature`` is not free.
    """
    try:
        params = list(inspect.signature(cls.execute).parameters.values())  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    positional = [p for p in params[1:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


class _ActionStep(BaseStep[Any]):
    """A step that calls into the action; pickles as its class and params."""

    def __init__(self, action: Any) -> None:
        self._action: Any = action
        self._cls: type = type(action)
        self._params: Any = action.params

    def action(self, context: Any) -> Any:
        if self._action is None:
            self._action = self._cls(self._params, context.runtime_ctx)
        return self._action

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_action"] = None
        return state


class ExportDatasetStep(_ActionStep):
    name = "dataset"
    progress_weight = 0.3
    progress_proportion = PROPORTIONS["dataset"]

    def execute(self, context: Any) -> StepResult:
        dest = Path(context.runtime_ctx.work_dir) / "dataset"
        path = Path(self.action(context).export_dataset(dest))
        count = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1
        context.dataset = {"path": str(path), "count": count}
        return StepResult(data={"path": str(path), "count": count})


class ConvertDatasetStep(_ActionStep):
    name = "convert"
    progress_weight = 0.2
    progress_proportion = PROPORTIONS["convert"]

    def execute(self, context: Any) -> StepResult:
        action = self.action(context)
        source = Path(context.dataset["path"])
        converted = Path(action.convert_dataset(source, action.target_format))
        context.dataset = {**context.dataset, "config_path": str(converted), "source_path": str(source)}
        return StepResult(data={"config_path": str(converted)})


def data_path_of(dataset: dict[str, Any]) -> Path:
    """The converted config file, else the export's ``dataset.yaml`` if present, else its directory."""
    if dataset.get("config_path"):
        return Path(dataset["config_path"])
    path = Path(dataset["path"])
    return path / "dataset.yaml" if (path / "dataset.yaml").is_file() else path


class TrainExecuteStep(_ActionStep):
    name = "train"
    progress_weight = 0.5
    progress_proportion = PROPORTIONS["train"]

    def execute(self, context: Any) -> StepResult:
        from synapse_ray.runtime.autolog import current

        action = self.action(context)
        result = action.execute(data_path_of(context.dataset), action.get_checkpoint())
        autolog = current()  # cleared after this step by placement.user_code
        result = action.check_result(result)
        if hasattr(result, "model_dump"):
            data = result.model_dump()
        elif isinstance(result, dict):
            data = dict(result)
        else:
            data = {"result": result}
        weights = data.get("weights_path") or (autolog.extra.get("model_path") if autolog else None)
        if weights:
            context.model_path = str(weights)
        return StepResult(data=data)


class ModelUploadStep(_ActionStep):
    name = "model_upload"
    progress_weight = 0.1
    progress_proportion = PROPORTIONS["model_upload"]

    def can_skip(self, context: Any) -> bool:
        return not context.model_path

    def execute(self, context: Any) -> StepResult:
        action = self.action(context)
        path = Path(context.model_path)
        if not path.exists():
            action.log_message(f"Model path {path} does not exist: nothing to upload", "warning")
            return StepResult(skipped=True, data={"reason": "path_not_found"})
        if not action.runtime_ctx.has_backend:
            return StepResult(skipped=True, data={"reason": "no_backend"})
        params = context.params
        runtime = action.runtime_ctx
        base = params.get("name") or f"train_{runtime.job_id or runtime.run_id}"
        hyper = params.get("hyperparameter") or (params.get("hyperparameters") or [{}])[0]
        fields: dict[str, Any] = {
            "name": f"{base}_{uuid.uuid4().hex[:8]}",  # upstream: model names are unique per tenant
            "description": params.get("description") or "",
            "configuration": {"hyperparameter": hyper},
        }
        checkpoint = (runtime.checkpoint or {}).get("id") or params.get("checkpoint")
        if checkpoint:
            fields["checkpoint"] = checkpoint
        model = action.create_model(path, **fields)
        context.model = dict(model)
        action.log_message(f"Model registered: {model.get('id')}")
        return StepResult(data={"model_id": model.get("id")})


def register_train_flow(action: Any, registry: Any) -> None:
    registry.register(ExportDatasetStep(action))
    if getattr(action, "target_format", None):
        registry.register(ConvertDatasetStep(action))
    registry.register(TrainExecuteStep(action))
    registry.register(ModelUploadStep(action))
