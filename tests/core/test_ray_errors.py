"""``map_ray_errors`` and the stored-value fetch, with Ray's own exception types (no cluster)."""

from __future__ import annotations

import pytest
from ray import exceptions as rx

from synapse_ray import RunCancelledError, ValueTransferError, WorkerCrashedError
from synapse_ray.errors import RayTimeoutError
from synapse_ray.executors.ray.errors import map_ray_errors
from synapse_ray.executors.ray.values import StoredValue, _fetching


def _remote_failure(cause: BaseException) -> rx.RayTaskError:
    return rx.RayTaskError("run_action", "Traceback (most recent call last):\n  remote frames", cause)


def test_a_remote_exception_comes_back_as_itself_with_its_traceback():
    with pytest.raises(KeyError) as info, map_ray_errors("Action 'a'"):
        raise _remote_failure(KeyError("missing column"))
    assert "remote frames" in info.value.remote_traceback


@pytest.mark.parametrize(
    "ray_error",
    [
        rx.NodeDiedError("node 1 died"),
        rx.ObjectLostError("ab" * 14, None, "call site"),
        rx.OwnerDiedError("ab" * 14, None, "call site"),
    ],
)
def test_dead_workers_become_worker_crashed_chained_from_ray(ray_error):
    with pytest.raises(WorkerCrashedError) as info, map_ray_errors("Step 'train'", step="train"):
        raise ray_error
    assert info.value.__cause__ is ray_error
    assert info.value.fields["step"] == "train" and "Step 'train'" in str(info.value)


def test_a_remote_that_failed_on_a_dead_worker_or_lost_data_is_typed_not_raw():
    """Raised inside the step: a worker it waited on died (a crash, retried as one), or data
    it read was lost for good (a transfer error: a retry could not bring it back)."""
    died = rx.NodeDiedError("node 1 died")
    with pytest.raises(WorkerCrashedError) as crashed, map_ray_errors("Step 'train'", step="train"):
        raise _remote_failure(died)
    assert crashed.value.__cause__ is died
    lost = rx.OwnerDiedError("ab" * 14, None, "call site")
    with (
        pytest.raises(ValueTransferError, match="lost from Ray's object store") as info,
        map_ray_errors("Step 'train'", step="train"),
    ):
        raise _remote_failure(lost)
    assert info.value.__cause__ is lost and info.value.fields["step"] == "train"


def test_cancel_and_timeout_are_typed():
    with pytest.raises(RunCancelledError), map_ray_errors("Action 'a'"):
        raise rx.TaskCancelledError()
    with pytest.raises(RayTimeoutError, match="did not answer in time"), map_ray_errors("Action 'a'"):
        raise rx.GetTimeoutError("timed out")


def test_a_stored_value_ray_lost_is_a_named_transfer_error():
    lost = rx.OwnerDiedError("ab" * 14, None, "call site")
    with (
        pytest.raises(ValueTransferError, match="'features', 'labels' is lost") as info,
        _fetching(["features", "labels"]),
    ):
        raise lost
    assert info.value.__cause__ is lost and info.value.fields["attribute"] == "features"
    with pytest.raises(ValueTransferError, match="never stored"):
        StoredValue("features", 10, "ndarray").get()
