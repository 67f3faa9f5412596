"""Both examples on RayExecutor in every mode, against the real local backend."""

from __future__ import annotations

import pytest

from synapse_ray import RayExecutor, RunStatus
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

SIMPLE = str(REPO / "examples/train_simple.py") + ":DigitsTrainAction"
STEPS = str(REPO / "examples/train_steps.py") + ":DigitsStepTrainAction"


@pytest.mark.parametrize("mode", ["auto", "task", "actors"])
@pytest.mark.parametrize("target", [SIMPLE, STEPS], ids=["simple", "steps"])
def test_examples_in_every_mode(digits_backend, target, mode):
    server, dataset_id = digits_backend
    handle = RayExecutor(backend=server.spec, mode=mode).submit(
        target, {"dataset_id": dataset_id, "epochs": 3}
    )
    result = handle.result(timeout=180)
    assert isinstance(result["model_id"], int)
    snap = handle.progress()
    assert snap.status is RunStatus.SUCCEEDED and snap.overall == 100.0
    preprocess = {"preprocess"} if target == STEPS else set()  # the step example fans out its shards
    assert set(snap.categories) == {"dataset", "train", "model_upload"} | preprocess
