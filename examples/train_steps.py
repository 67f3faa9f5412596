"""A step-based train action: load dataset -> preprocess -> train -> upload model.

Each step has its own progress weight (and, on Ray, may get its own resources).
The preprocess step fans out over shards of the training set with
``ctx.map_shards``: each shard is standardized and augmented (a noisy copy of
every image) in its own Ray task, or in-process under
``LocalExecutor``; the shards' results come back through Ray's object store.
If a later step fails, earlier steps roll back (the train step deletes its
checkpoint). The checkpoint goes from train to upload as an artifact
(``ctx.artifact_dir("checkpoint")``): on Ray the upload step may run on
another node, and finds the same files there. Run it (after registering the dataset, see the README):

    synapse-ray run examples/train_steps.py:DigitsStepTrainAction --params '{"dataset_id": 1}'
"""

from __future__ import annotations

import functools
import pickle
import shutil
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from synapse_ray import (
    BaseStep,
    BaseTrainAction,
    RetryPolicy,
    StepRegistry,
    StepResult,
    TrainContext,
    TrainProgressCategories,
)
from synapse_ray.backend import BackendConnectionError, BackendTimeoutError, ServerError

CATS = TrainProgressCategories


class DigitsStepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: int
    epochs: int = Field(20, ge=1, le=10_000)
    alpha: float = Field(1e-4, gt=0)
    test_size: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    model_name: str = "digits-sgd-steps"
    shards: int = Field(8, ge=1, le=1_000)
    augment: bool = True


class LoadDatasetStep(BaseStep[TrainContext]):
    name = "load_dataset"
    progress_weight = 1.0
    # Transient backend trouble is worth another try; a wrong dataset id is not.
    retry = RetryPolicy(
        max_attempts=3, delay=0.5, retry_on=(BackendConnectionError, BackendTimeoutError, ServerError)
    )

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DigitsStepParams = ctx.params
        collection = ctx.client.get_data_collection(p.dataset_id)
        files = ctx.client.download_data_collection(collection, ctx.runtime_ctx.work_dir / "dataset")
        ctx.set_progress(1, 2, CATS.DATASET)
        with np.load(files[0]) as data:
            x, y = data["X"], data["y"]
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=p.test_size, random_state=p.seed, stratify=y
        )
        ctx.dataset = {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}
        ctx.set_progress(2, 2, CATS.DATASET)
        return StepResult(data={"collection": collection["name"], "rows": int(len(y))})


def prepare_shard(
    stats: tuple[np.ndarray, np.ndarray],
    augment: bool,
    seed: int,
    shard: tuple[np.ndarray, np.ndarray],
    ctx: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """One shard of the training set, standardized; with ``augment`` also a noisy copy of
    each image (seeded by the shard's index, so a retried shard gives the same rows)."""
    x, y = shard
    mean, std = stats
    if augment:
        noise = np.random.default_rng(seed + ctx.index).normal(0.0, 0.05, size=x.shape).astype(x.dtype)
        x, y = np.concatenate([x, np.clip(x + noise, 0.0, 1.0)]), np.concatenate([y, y])
    ctx.set_progress(1, 2)
    return (x - mean) / std, y


class PreprocessStep(BaseStep[TrainContext]):
    name = "preprocess"
    progress_weight = 1.0

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DigitsStepParams = ctx.params
        d = ctx.dataset
        stats = (d["x_train"].mean(axis=0), d["x_train"].std(axis=0) + 1e-6)
        shards = list(
            zip(np.array_split(d["x_train"], p.shards), np.array_split(d["y_train"], p.shards), strict=True)
        )
        fn = functools.partial(prepare_shard, stats, p.augment, p.seed)
        parts = ctx.map_shards(fn, shards, category="preprocess", retry=RetryPolicy(max_attempts=2))
        x_test = (d["x_test"] - stats[0]) / stats[1]
        ctx.dataset = {
            "x_train": np.concatenate([x for x, _ in parts]),
            "y_train": np.concatenate([y for _, y in parts]),
            "x_test": x_test,
            "y_test": d["y_test"],
        }
        return StepResult(data={"shards": len(parts), "rows": int(len(ctx.dataset["y_train"]))})


class TrainStep(BaseStep[TrainContext]):
    name = "train"
    progress_weight = 3.0

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DigitsStepParams = ctx.params
        d = ctx.dataset
        model = SGDClassifier(loss="log_loss", alpha=p.alpha, random_state=p.seed)
        classes = np.unique(d["y_train"])
        accuracy = 0.0
        for epoch in range(1, p.epochs + 1):
            ctx.raise_if_cancelled()  # cooperative cancel between epochs
            model.partial_fit(d["x_train"], d["y_train"], classes=classes)
            accuracy = float(model.score(d["x_test"], d["y_test"]))
            ctx.set_progress(epoch, p.epochs, CATS.TRAIN)
        out = ctx.artifact_dir("checkpoint")  # follows this step to the node that uploads it
        (out / "model.pkl").write_bytes(pickle.dumps(model))
        (out / "metrics.txt").write_text(f"accuracy={accuracy:.4f}\n")
        ctx.model_path = str(out)  # where it was written; other nodes use artifact_dir("checkpoint")
        return StepResult(data={"accuracy": accuracy}, rollback_data={"checkpoint": str(out)})

    def rollback(self, ctx: TrainContext, result: StepResult) -> None:
        checkpoint = result.rollback_data.get("checkpoint")
        if checkpoint:
            shutil.rmtree(checkpoint, ignore_errors=True)


class UploadModelStep(BaseStep[TrainContext]):
    name = "upload_model"
    progress_weight = 1.0

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DigitsStepParams = ctx.params
        checkpoint = ctx.artifact_dir("checkpoint")  # the train step's files, on this node
        if not any(checkpoint.iterdir()):
            return StepResult(success=False, error="no checkpoint to upload (train step produced none)")
        ctx.set_progress(0, 1, CATS.MODEL_UPLOAD)
        accuracy = ctx.step_results[-1].data.get("accuracy") if ctx.step_results else None
        ctx.model = ctx.client.create_model(
            {
                "name": p.model_name,
                "plugin": ctx.runtime_ctx.action_name,
                "version": "1",
                "description": f"accuracy={accuracy}",
                "configuration": {"epochs": p.epochs, "alpha": p.alpha},
            },
            file=checkpoint,  # a directory: zipped and streamed by the client
        )
        ctx.set_progress(1, 1, CATS.MODEL_UPLOAD)
        return StepResult(data={"model_id": ctx.model["id"]})


class DigitsStepTrainAction(BaseTrainAction[DigitsStepParams]):
    action_name = "digits_train_steps"

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(LoadDatasetStep())
        registry.register(PreprocessStep())
        registry.register(TrainStep())
        registry.register(UploadModelStep())
