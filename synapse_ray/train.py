"""``BaseTrainAction``: a train action with dataset, model and progress helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

from synapse_ray.action import BaseAction
from synapse_ray.errors import ConfigurationError, NoBackendError
from synapse_ray.runtime.context import NO_CLIENT_HINT
from synapse_ray.steps.context import BaseStepContext, TrainContext

P = TypeVar("P", bound=BaseModel)


class TrainProgressCategories:
    """Progress categories of a train action (plain strings: cheap to send)."""

    DATASET = "dataset"
    TRAIN = "train"
    MODEL_UPLOAD = "model_upload"
    ALL = (DATASET, TRAIN, MODEL_UPLOAD)


class BaseTrainAction(BaseAction[P]):
    """Fetch a dataset, train, upload a model. ``execute()`` or steps."""

    category: ClassVar[str] = "neural_net"
    progress: ClassVar[type[TrainProgressCategories]] = TrainProgressCategories
    progress_weights: ClassVar[dict[str, float] | None] = {
        TrainProgressCategories.DATASET: 0.2,
        TrainProgressCategories.TRAIN: 0.6,
        TrainProgressCategories.MODEL_UPLOAD: 0.2,
    }

    @property
    def client(self) -> Any:
        if not self.runtime_ctx.has_backend:
            raise NoBackendError(NO_CLIENT_HINT)
        return self.runtime_ctx.client

    def create_context(self) -> TrainContext:
        return TrainContext(runtime_ctx=self.runtime_ctx, params=self.params)

    def summarize(self, ctx: BaseStepContext) -> dict[str, Any]:
        model = getattr(ctx, "model", None)
        if model is None:
            return {}
        model_id = model.get("id") if isinstance(model, dict) else getattr(model, "id", None)
        return {"model": model, "model_id": model_id}

    # -- backend helpers (override to work without a backend) ----------
    def get_dataset(self) -> Any:
        dataset_id = getattr(self.params, "dataset_id", None)
        if dataset_id is None:
            raise ConfigurationError(
                f"{type(self).__name__}: params.dataset_id is required to fetch a dataset "
                "(add `dataset_id: int` to your params model, or override get_dataset())"
            )
        return self.client.get_data_collection(dataset_id)

    def create_model(self, path: str | Path, **kwargs: Any) -> Any:
        data = {"name": kwargs.pop("name", self.action_name), "plugin": self.action_name, **kwargs}
        return self.client.create_model(data, file=path)

    def get_model(self, model_id: int | str) -> Any:
        return self.client.get_model(model_id)
