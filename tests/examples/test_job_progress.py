"""Progress and outcome written to the backend job record, by the one writer."""

from __future__ import annotations

import pytest

from synapse_ray import ConfigurationError, LocalExecutor, StepError
from synapse_ray.backend import BackendClient, NotFoundError
from tests.core.actions import ThreeStepAction


def test_local_run_writes_progress_and_status_to_its_job(digits_backend):
    server, _ = digits_backend
    with BackendClient(server.spec) as client:
        job = client.create_job({"action": "three_step_action"})
        result = LocalExecutor(backend=server.spec).execute(ThreeStepAction, {}, job_id=job["id"])
        record = client.get_job(job["id"])
    assert result["success"]
    assert record["status"] == "succeeded"
    progress = record["progress_record"]
    assert progress["overall"] == 100.0
    assert {name: s["status"] for name, s in progress["steps"].items()} == {
        "load": "succeeded",
        "train": "succeeded",
        "upload": "succeeded",
    }
    assert progress["categories"]["train"] == {"current": 2.0, "total": 2.0}


def test_failed_run_marks_its_job_failed_with_the_error(digits_backend):
    server, _ = digits_backend
    with BackendClient(server.spec) as client:
        job = client.create_job({"action": "three_step_action"})
        with pytest.raises(StepError):
            LocalExecutor(backend=server.spec).execute(
                ThreeStepAction, {"fail_at": "train"}, job_id=job["id"]
            )
        record = client.get_job(job["id"])
    assert record["status"] == "failed"
    assert "Step 'train' failed: boom in train" in record["progress_record"]["error"]
    assert record["progress_record"]["steps"]["load"]["status"] == "rolled_back"


def test_job_id_is_checked_before_anything_runs(digits_backend):
    server, _ = digits_backend
    with pytest.raises(ConfigurationError, match="job_id=7 needs a backend"):
        LocalExecutor().submit(ThreeStepAction, {}, job_id=7)
    with pytest.raises(NotFoundError, match="job 999999"):
        LocalExecutor(backend=server.spec).submit(ThreeStepAction, {}, job_id=999999)
