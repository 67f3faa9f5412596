from __future__ import annotations

import textwrap

import pytest

from synapse_ray import (
    ActionError,
    LocalExecutor,
    ParamsValidationError,
    RunStatus,
    RunTimeoutError,
    TargetError,
    load_action,
)
from tests.core.actions import AddAction


def test_execute_blocks_and_returns_result():
    assert LocalExecutor().execute(AddAction, {"a": 2, "b": 5}) == {"sum": 7}


def test_submit_handle_reports_progress_metrics_and_logs():
    handle = LocalExecutor().submit("tests.core.actions:AddAction", {"a": 1})
    assert handle.result(timeout=10) == {"sum": 2}
    snap = handle.progress()
    assert handle.status() is RunStatus.SUCCEEDED and snap.status is RunStatus.SUCCEEDED
    assert snap.overall == 100.0
    assert snap.run_id == handle.run_id
    assert {c: (p.current, p.total) for c, p in snap.categories.items()} == {
        "dataset": (4, 4),
        "train": (4, 4),
        "model_upload": (4, 4),
    }
    assert snap.steps["execute"].percent == 100.0
    assert snap.metrics == {"train.loss": 0.5}
    assert handle.logs()[0]["event"] == "added"


def test_action_error_keeps_type_and_cause():
    class Broken(AddAction):
        def execute(self):
            raise KeyError("missing column")

    handle = LocalExecutor().submit(Broken, {"a": 1})
    with pytest.raises(ActionError) as info:
        handle.result(timeout=10)
    assert "Action 'broken' failed: KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    assert handle.status() is RunStatus.FAILED


def test_bad_params_fail_in_submit_before_anything_runs():
    ran = []

    class Spy(AddAction):
        def execute(self):
            ran.append(1)

    with pytest.raises(ParamsValidationError, match="a: Field required"):
        LocalExecutor().submit(Spy, {})
    assert ran == []


def test_result_timeout():
    import threading

    gate = threading.Event()

    class Slow(AddAction):
        def execute(self):
            gate.wait(5)
            return 1

    handle = LocalExecutor().submit(Slow, {"a": 1})
    with pytest.raises(TimeoutError) as info:
        handle.result(timeout=0.05)
    assert isinstance(info.value, RunTimeoutError)  # ours, and the builtin callers caught before
    assert handle.status() is RunStatus.RUNNING
    gate.set()
    assert handle.result(timeout=5) == 1


def test_file_target(tmp_path):
    path = tmp_path / "my_action.py"
    path.write_text(
        textwrap.dedent(
            """
        from pydantic import BaseModel
        from synapse_ray import BaseTrainAction

        class P(BaseModel):
            x: int

        class Double(BaseTrainAction[P]):
            def execute(self):
                return self.params.x * 2
        """
        )
    )
    assert LocalExecutor().execute(f"{path}:Double", {"x": 21}) == 42


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("no_such_module_xyz:Action", "Module 'no_such_module_xyz' not found"),
        ("tests.core.actions:Missing", "has no attribute 'Missing'"),
        ("tests.core.actions:NotAnAction", "is not an action"),
        ("tests.core.actions:NoParamsAction", "has no params model"),
        ("/no/such/file.py:A", "Action file not found: /no/such/file.py"),
        ("no-colon-here", "expected 'package.module:ClassName'"),
    ],
)
def test_bad_targets(target, fragment):
    with pytest.raises(TargetError) as info:
        load_action(target)
    assert fragment in str(info.value)


def test_target_whose_import_fails(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import not_a_real_dependency_abc\n")
    with pytest.raises(TargetError, match="Importing .*broken.py failed: ModuleNotFoundError"):
        load_action(f"{path}:X")


def test_missing_attribute_lists_actions_in_module():
    with pytest.raises(TargetError, match=r"actions there: .*AddAction"):
        load_action("tests.core.actions:Nope")


def test_cancel_during_a_retry_wait_ends_cancelled():
    import threading

    from synapse_ray import RetryPolicy, RunCancelledError

    failed = threading.Event()

    class Retrying(AddAction):
        retry = RetryPolicy(max_attempts=5, delay=30.0, retry_on=(OSError,))

        def execute(self):
            failed.set()
            raise OSError("transient")

    handle = LocalExecutor().submit(Retrying, {"a": 1})
    assert failed.wait(10)
    handle.cancel(grace_s=10)
    with pytest.raises(RunCancelledError) as info:
        handle.result(timeout=10)
    assert isinstance(info.value.__cause__, OSError)
    assert handle.status() is RunStatus.CANCELLED


def test_cancel_token_wait_sees_a_remote_cancel():
    import time

    from synapse_ray.runtime.cancel import CancelToken

    class Source:
        def __init__(self):
            self.at = time.monotonic() + 0.3

        def is_cancelled(self):
            return time.monotonic() >= self.at

    token = CancelToken(Source())
    started = time.monotonic()
    assert token.wait(30) is True
    assert time.monotonic() - started < 5
