"""A simple train action: everything in one ``execute()``.

Fetches the dataset from the backend, trains a linear classifier on the
digits data for a few epochs with live progress and metrics, and uploads the
trained model. Run it (after registering the dataset, see the README):

    synapse-ray run examples/train_simple.py:DigitsTrainAction --params '{"dataset_id": 1}'
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from synapse_ray import BaseTrainAction


class DigitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: int
    epochs: int = Field(20, ge=1, le=10_000)
    alpha: float = Field(1e-4, gt=0)
    test_size: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    model_name: str = "digits-sgd"


class DigitsTrainAction(BaseTrainAction[DigitsParams]):
    action_name = "digits_train"

    def execute(self) -> dict[str, Any]:
        p = self.params
        # dataset: fetch the collection, download its file, load the arrays
        collection = self.get_dataset()
        files = self.client.download_data_collection(collection, self.runtime_ctx.work_dir / "dataset")
        self.set_progress(1, 2, self.progress.DATASET)
        with np.load(files[0]) as data:
            x, y = data["X"], data["y"]
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=p.test_size, random_state=p.seed, stratify=y
        )
        self.set_progress(2, 2, self.progress.DATASET)

        # train: one partial_fit per epoch, progress and accuracy as we go
        model = SGDClassifier(loss="log_loss", alpha=p.alpha, random_state=p.seed)
        classes = np.unique(y)
        accuracy = 0.0
        for epoch in range(1, p.epochs + 1):
            model.partial_fit(x_train, y_train, classes=classes)
            accuracy = float(model.score(x_test, y_test))
            self.set_progress(epoch, p.epochs, self.progress.TRAIN)
            self.set_metrics({"epoch": epoch, "accuracy": accuracy}, category="train")

        # model upload: save locally, then create the model record in the backend
        self.set_progress(0, 1, self.progress.MODEL_UPLOAD)
        path = self.runtime_ctx.work_dir / "model.pkl"
        path.write_bytes(pickle.dumps(model))
        created = self.create_model(
            path,
            name=p.model_name,
            version="1",
            description=f"accuracy={accuracy:.4f}",
            configuration={"epochs": p.epochs, "alpha": p.alpha},
        )
        self.set_progress(1, 1, self.progress.MODEL_UPLOAD)
        return {"model_id": created["id"], "accuracy": accuracy}
