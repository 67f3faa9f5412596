"""``BaseTrainAction``: a train action with dataset, model and progress helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synapse_ray.action import BaseAction
from synapse_ray.enums import PluginCategory
from synapse_ray.errors import ConfigurationError, NoBackendError
from synapse_ray.runtime.context import NO_CLIENT_HINT
from synapse_ray.steps.context import BaseStepContext, TrainContext
from synapse_ray.steps.params import params_dict
from synapse_ray.steps.registry import StepRegistry
from synapse_ray.train_flow import register_train_flow, takes_data_path

P = TypeVar("P", bound=BaseModel)


class BaseTrainParams(BaseModel):
    """Upstream's base train params: a checkpoint model id, and the current flow's fields.

    Extra fields are allowed (the backend sends more than a plugin declares).
    ``hyperparameters[0]`` is flattened to top-level fields (without
    overwriting given ones) unless ``is_tune``, as upstream does.
    """

    model_config = ConfigDict(extra="allow")

    checkpoint: int | None = Field(default=None, description="Model id to start training from")
    dataset: int | None = Field(default=None, description="Backend data collection to train on")
    splits: dict[str, Any] | None = None
    is_tune: bool = False
    hyperparameters: list[dict[str, Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_hyperparameters(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("is_tune"):
            return data
        hyper = data.get("hyperparameters")
        if isinstance(hyper, list) and hyper and isinstance(hyper[0], dict):
            data = {**hyper[0], **data}
        return data


class TrainProgressCategories:
    """Progress categories of a train action (plain strings: cheap to send)."""

    DATASET = "dataset"
    TRAIN = "train"
    MODEL_UPLOAD = "model_upload"
    ALL = (DATASET, TRAIN, MODEL_UPLOAD)


class BaseTrainAction(BaseAction[P]):
    """Fetch a dataset, train, upload a model. ``execute()`` or steps."""

    category: ClassVar[str] = PluginCategory.NEURAL_NET
    # Current upstream flow: the dataset format execute(data_path, checkpoint) wants.
    target_format: ClassVar[str | None] = None
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
        return TrainContext(runtime_ctx=self.runtime_ctx, params=params_dict(self.params))

    # -- the current upstream flow: execute(data_path, checkpoint) ------
    @classmethod
    def uses_train_flow(cls) -> bool:
        """``execute(data_path, checkpoint)`` and no own ``setup_steps``: upstream's default steps."""
        return cls.setup_steps is BaseAction.setup_steps and takes_data_path(cls)

    @classmethod
    def is_step_based(cls) -> bool:
        return super().is_step_based() or cls.uses_train_flow()

    @classmethod
    def validate_params(cls, params: Any) -> Any:
        validated = super().validate_params(params)
        if getattr(validated, "is_tune", False):
            raise ConfigurationError(
                f"{cls.__name__}: tune mode (is_tune=True) is not supported yet; "
                "run without is_tune, or run Ray Tune inside execute()"
            )
        if (
            cls.uses_train_flow()
            and cls.export_dataset is BaseTrainAction.export_dataset
            and getattr(validated, "dataset", None) is None
        ):
            raise ConfigurationError(
                f"{cls.__name__}: params.dataset (a data collection id) is required to export the "
                "dataset for execute(data_path, checkpoint); add it, or override export_dataset()"
            )
        return validated

    def build_registry(self) -> StepRegistry[Any]:
        if type(self).uses_train_flow():
            registry: StepRegistry[Any] = StepRegistry()
            register_train_flow(self, registry)
            return registry
        return super().build_registry()

    def export_dataset(self, dest: Path) -> Path:
        """Write the dataset's files under ``dest`` and return the path ``execute`` gets.

        Default: download the backend data collection ``params.dataset``. Override
        to read from elsewhere (object storage, a shared volume).
        """
        dataset = getattr(self.params, "dataset", None)
        if dataset is None:
            raise ConfigurationError(
                f"{type(self).__name__}: params.dataset is required to export the dataset"
            )
        client = self.client
        collection = client.get_data_collection(dataset)
        files = collection.get("file_specifications", [])
        for done, spec in enumerate(files, start=1):
            client.download(spec["url"], dest, name=spec["name"], checksum=spec.get("checksum"))
            self.set_progress(done, len(files), self.progress.DATASET)
        dest.mkdir(parents=True, exist_ok=True)
        return dest

    def convert_dataset(self, path: Path, target_format: str) -> Path:
        """Convert the exported dataset for ``target_format``; return the path ``execute`` gets.

        No format converters ship with synapse_ray: the default accepts a dataset
        that is already in YOLO form (``dataset.yaml``) and otherwise asks for an override.
        """
        if target_format == "yolo" and (path / "dataset.yaml").is_file():
            return path / "dataset.yaml"
        raise ConfigurationError(
            f"{type(self).__name__}: no converter to {target_format!r} for {path}; "
            "override convert_dataset(path, target_format)"
        )

    # -- checkpoints and autolog -----------------------------------------
    def get_checkpoint(self) -> dict[str, Any] | None:
        """``ctx.checkpoint``, else ``params.checkpoint`` fetched and extracted.

        Returns ``{category, path, id, name}`` or None (see ``checkpoint.py``).
        """
        from synapse_ray.checkpoint import resolve_checkpoint

        return resolve_checkpoint(self)

    def autolog(self, framework: str) -> None:
        """Report a framework's training progress, metrics and artifacts (``'ultralytics'``)."""
        from synapse_ray.integrations import autolog

        autolog(framework, self)

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
