"""Upstream's error names and the exception types plugins catch."""

from __future__ import annotations

import pickle

import pytest

from synapse_ray import (
    ActionError,
    ConfigurationError,
    ExecutionError,
    LocalExecutor,
    ParamsValidationError,
    PluginError,
    StepError,
    SynapseRayError,
    ValidationError,
)
from synapse_ray.errors import NoBackendError
from tests.compat.plugins import DevGuideStepsTrain, DictParamsTrain


def test_hierarchy_matches_what_upstream_plugins_catch():
    assert issubclass(StepError, RuntimeError) and issubclass(StepError, ExecutionError)
    assert issubclass(ActionError, StepError)
    assert issubclass(ParamsValidationError, ValidationError) and issubclass(ValidationError, ValueError)
    assert issubclass(NoBackendError, RuntimeError) and issubclass(ConfigurationError, ValueError)
    assert PluginError is SynapseRayError


def test_upstream_call_shape_with_details_round_trips_through_pickle():
    for cls in (ExecutionError, ValidationError):
        err = cls("training diverged", {"epoch": 3})
        assert str(err) == "training diverged" and err.details == {"epoch": 3}
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is cls and copy.details == {"epoch": 3} and str(copy) == "training diverged"


def test_a_failing_step_is_caught_as_runtime_error_naming_the_step_and_chaining_the_cause():
    class Broken(DictParamsTrain):
        def setup_steps(self, registry):
            super().setup_steps(registry)
            registry.unregister("fit")
            registry.register(_Explode())

    with pytest.raises(RuntimeError, match="Step 'explode' failed: boom") as info:
        LocalExecutor().execute(Broken, {})
    assert isinstance(info.value, StepError) and isinstance(info.value.__cause__, ZeroDivisionError)


def test_a_plugin_raising_execution_error_is_caught_as_execution_error():
    class Raises(DictParamsTrain):
        def setup_steps(self, registry):
            registry.register(_RaisesExecutionError())

    with pytest.raises(ExecutionError) as info:
        LocalExecutor().execute(Raises, {})
    assert isinstance(info.value.__cause__, ExecutionError) and info.value.__cause__.details == {"why": "gpu"}


def test_bad_params_are_validation_errors_before_anything_runs():
    with pytest.raises(ValidationError, match="dataset_id"):
        LocalExecutor().submit(DevGuideStepsTrain, {"epochs": 1})


from synapse_ray import BaseStep, StepResult  # noqa: E402


class _Explode(BaseStep):
    name = "explode"

    def execute(self, context):
        raise ZeroDivisionError("boom")


class _RaisesExecutionError(BaseStep):
    name = "raises"

    def execute(self, context) -> StepResult:
        raise ExecutionError("no device", {"why": "gpu"})


def test_misuse_raises_library_errors_that_stay_the_builtins_callers_caught():
    """Everything raised on purpose is a SynapseRayError; where a builtin was raised
    before (and upstream raised it), the error is that builtin too."""
    from synapse_ray import (
        ArgumentTypeError,
        BaseStep,
        ClusterError,
        RunTimeoutError,
        StepRegistry,
        StepResult,
    )
    from synapse_ray.runtime.run_log import make_entry
    from synapse_ray.steps.context import BaseStepContext

    class S(BaseStep):
        name = "s"

        def execute(self, ctx):
            return StepResult()

    registry = StepRegistry().register(S())
    for call, builtin in (
        (lambda: registry.register(S()), ValueError),  # a duplicate name
        (lambda: registry.unregister("nope"), ValueError),
        (lambda: registry.register(object()), TypeError),
        (lambda: make_entry("e", [1], job=None, step=None), TypeError),
        (lambda: BaseStepContext().set_metrics({"a": 1}), ValueError),
    ):
        with pytest.raises(SynapseRayError) as info:
            call()
        assert isinstance(info.value, builtin), type(info.value)
        assert type(pickle.loads(pickle.dumps(info.value))) is type(info.value)
    assert issubclass(ArgumentTypeError, ConfigurationError) and issubclass(ArgumentTypeError, TypeError)
    assert issubclass(RunTimeoutError, TimeoutError)
    assert not issubclass(ClusterError, ValueError)  # not bad input: the cluster cannot run this
