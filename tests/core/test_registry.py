from __future__ import annotations

import pytest

from synapse_ray import BaseStep, RetryPolicy, StepRegistry, StepResult
from synapse_ray.errors import ConfigurationError


class A(BaseStep):
    name = "a"

    def execute(self, ctx):
        return StepResult()


class B(A):
    name = "b"


class C(A):
    name = "c"


class LoadDatasetStep(BaseStep):
    def execute(self, ctx):
        return StepResult()


def test_register_order_insert_and_unregister():
    reg = StepRegistry()
    assert not reg and len(reg) == 0
    reg.register(A()).register(C())
    reg.insert_before("c", B())
    assert [s.name for s in reg.get_steps()] == ["a", "b", "c"]
    reg.unregister("b")
    reg.insert_after("a", B())
    assert [s.name for s in reg] == ["a", "b", "c"]
    assert "b" in reg and len(reg) == 3 and bool(reg)


def test_duplicate_name_is_refused():
    reg = StepRegistry().register(A())
    with pytest.raises(ValueError, match="Step 'a' is already registered"):
        reg.register(A())


def test_unknown_anchor_is_a_value_error_listing_known_steps():
    reg = StepRegistry().register(A())
    with pytest.raises(ValueError, match=r"Unknown step 'zzz' \(registered steps: 'a'\)"):
        reg.insert_after("zzz", B())
    with pytest.raises(ValueError, match="Unknown step 'zzz'"):
        reg.insert_before("zzz", B())
    with pytest.raises(ValueError, match="Unknown step 'nope'"):
        reg.unregister("nope")


def test_only_steps_are_accepted():
    with pytest.raises(TypeError, match="accepts BaseStep instances"):
        StepRegistry().register(object())  # type: ignore[arg-type]


def test_default_step_name_and_result_defaults():
    assert LoadDatasetStep().name == "load_dataset"
    r = StepResult()
    assert (r.success, r.data, r.error, r.rollback_data, r.skipped) == (True, {}, None, {}, False)
    assert r.timestamp > 0


def test_retry_policy_validation_and_backoff():
    p = RetryPolicy(max_attempts=4, delay=0.5, backoff=2.0, max_delay=1.5, retry_on=(KeyError,))
    assert [p.delay_for(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert p.should_retry(KeyError("x"), 1) and not p.should_retry(ValueError("x"), 1)
    assert not p.should_retry(KeyError("x"), 4)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="retry_on"):
        RetryPolicy(retry_on=("ValueError",))  # type: ignore[arg-type]
