from __future__ import annotations

import pickle
import threading

import pytest

from synapse_ray import (
    LocalExecutor,
    RunCancelledError,
    RunStatus,
    StepError,
    StepResultError,
    StepStatus,
)
from tests.core import actions
from tests.core.actions import ThreeStepAction


@pytest.fixture(autouse=True)
def clear_events():
    actions.EVENTS.clear()
    actions.STARTED.clear()
    yield


def run(params: dict):
    return LocalExecutor().submit(ThreeStepAction, params)


def test_steps_run_in_order_and_summary():
    handle = run({})
    result = handle.result(timeout=10)
    assert actions.EVENTS == ["execute:load:1", "execute:train:1", "execute:upload:1"]
    assert result == {
        "success": True,
        "steps_executed": 3,
        "steps_total": 3,
        "steps_skipped": 0,
        "model": {"id": 42, "name": "m"},
        "model_id": 42,
    }
    snap = handle.progress()
    assert snap.status is RunStatus.SUCCEEDED
    assert snap.overall == 100.0
    assert {n: s.status for n, s in snap.steps.items()} == {
        "load": StepStatus.SUCCEEDED,
        "train": StepStatus.SUCCEEDED,
        "upload": StepStatus.SUCCEEDED,
    }
    assert [s.weight for s in snap.steps.values()] == pytest.approx([0.2, 0.6, 0.2])


def test_skipped_step_is_not_run_nor_rolled_back():
    handle = run({"skip": "train", "fail_at": "upload"})
    with pytest.raises(StepError):
        handle.result(timeout=10)
    assert actions.EVENTS == [
        "execute:load:1",
        "execute:upload:1",
        "rollback:upload",
        "rollback:load",
    ]
    assert handle.progress().steps["train"].status is StepStatus.SKIPPED


def test_retry_by_policy_with_attempt_visible():
    handle = run({"flaky": 2})
    result = handle.result(timeout=10)
    assert result["success"] is True
    assert actions.EVENTS == [
        "execute:load:1",
        "execute:train:1",
        "execute:train:2",
        "execute:train:3",
        "execute:upload:1",
    ]
    assert handle.progress().steps["train"].attempt == 3


def test_retry_exhausted_fails_and_names_attempt():
    handle = run({"flaky": 5})
    with pytest.raises(StepError) as info:
        handle.result(timeout=10)
    err = info.value
    assert err.step == "train" and err.attempt == 3
    assert str(err) == "Step 'train' failed: flaky attempt 3"
    assert isinstance(err.__cause__, actions.Flaky)


def test_failure_rolls_back_started_steps_in_reverse_including_failed_one():
    handle = run({"fail_at": "upload"})
    with pytest.raises(StepError) as info:
        handle.result(timeout=10)
    err = info.value
    assert str(err) == "Step 'upload' failed: boom in upload"
    assert err.step == "upload" and err.attempt == 1
    assert isinstance(err.__cause__, ValueError)
    assert err.__cause__.__traceback__ is not None
    assert actions.EVENTS[-3:] == ["rollback:upload", "rollback:train", "rollback:load"]
    snap = handle.progress()
    assert snap.status is RunStatus.FAILED
    assert all(s.status is StepStatus.ROLLED_BACK for s in snap.steps.values())
    assert "boom in upload" in (snap.error or "")


def test_non_retryable_exception_is_not_retried():
    handle = run({"fail_at": "train"})
    with pytest.raises(StepError):
        handle.result(timeout=10)
    assert actions.EVENTS.count("execute:train:1") == 1
    assert "execute:train:2" not in actions.EVENTS


def test_rollback_error_is_recorded_and_does_not_mask_original():
    handle = run({"fail_at": "upload", "rollback_fails": "train"})
    with pytest.raises(StepError) as info:
        handle.result(timeout=10)
    err = info.value
    assert str(err) == "Step 'upload' failed: boom in upload"
    assert err.rollback_errors == ["train: RuntimeError: rollback of train broke"]
    # the remaining rollback still ran
    assert actions.EVENTS[-3:] == ["rollback:upload", "rollback:train", "rollback:load"]


def test_step_result_failure_message_form():
    handle = run({"return_bad": "train:false"})
    with pytest.raises(StepError) as info:
        handle.result(timeout=10)
    assert str(info.value) == "Step 'train' failed: declined"
    assert actions.EVENTS[-2:] == ["rollback:train", "rollback:load"]


def test_step_returning_non_step_result_is_an_error():
    handle = run({"return_bad": "load"})
    with pytest.raises(StepResultError) as info:
        handle.result(timeout=10)
    assert "returned dict, expected a StepResult" in str(info.value)
    assert info.value.step == "load"
    assert actions.EVENTS == ["execute:load:1", "rollback:load"]


def test_cancel_mid_step_rolls_back_and_starts_nothing_else():
    handle = run({"block_at": "train"})
    assert actions.STARTED.wait(10)
    handle.cancel(grace_s=10)
    with pytest.raises(RunCancelledError) as info:
        handle.result(timeout=10)
    assert info.value.step == "train"
    assert "execute:upload:1" not in actions.EVENTS
    assert actions.EVENTS[-2:] == ["rollback:train", "rollback:load"]
    assert handle.status() is RunStatus.CANCELLED


def test_step_error_pickles_with_fields():
    handle = run({"fail_at": "train"})
    with pytest.raises(StepError) as info:
        handle.result(timeout=10)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is StepError
    assert (copy.step, copy.attempt, str(copy)) == ("train", 1, "Step 'train' failed: boom in train")
    assert copy.rollback_errors == []


def test_cancel_before_any_step_runs_nothing():
    executor = LocalExecutor()
    gate = threading.Event()
    original = ThreeStepAction.run

    def gated_run(self):  # hold the run until cancel has been requested
        gate.wait(5)
        return original(self)

    ThreeStepAction.run = gated_run  # type: ignore[method-assign]
    try:
        handle = executor.submit(ThreeStepAction, {})
        handle.runtime.cancel_token.cancel()
        gate.set()
        with pytest.raises(RunCancelledError):
            handle.result(timeout=10)
    finally:
        ThreeStepAction.run = original  # type: ignore[method-assign]
    assert actions.EVENTS == []
    assert handle.status() is RunStatus.CANCELLED


def test_can_skip_raising_fails_its_step_and_rolls_back_completed_ones():
    from tests.core.actions import RecordingStep

    original = RecordingStep.can_skip

    def broken(self, ctx):
        if self.name == "upload":
            raise KeyError("no marker")
        return original(self, ctx)

    RecordingStep.can_skip = broken  # type: ignore[method-assign]
    try:
        handle = run({})
        with pytest.raises(StepError) as info:
            handle.result(timeout=10)
    finally:
        RecordingStep.can_skip = original  # type: ignore[method-assign]
    assert str(info.value) == "Step 'upload' failed: can_skip() raised 'no marker'"
    assert actions.EVENTS[-2:] == ["rollback:train", "rollback:load"]
