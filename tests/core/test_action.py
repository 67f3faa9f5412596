from __future__ import annotations

import pytest
from pydantic import BaseModel

from synapse_ray import (
    BaseTrainAction,
    ConfigurationError,
    ParamsValidationError,
    RuntimeContext,
    StepRegistry,
    TrainContext,
    TrainProgressCategories,
)
from tests.core.actions import AddAction, AddParams, NoParamsAction, StepParams, ThreeStepAction


def test_params_model_comes_from_the_generic_argument():
    assert AddAction.params_model is AddParams
    assert ThreeStepAction.params_model is StepParams
    assert AddAction.action_name == "add_action"

    class Explicit(BaseTrainAction):  # type: ignore[type-arg]
        params_model = AddParams
        action_name = "explicit"

    assert Explicit.params_model is AddParams and Explicit.action_name == "explicit"


def test_progress_categories():
    assert (
        TrainProgressCategories.DATASET,
        TrainProgressCategories.TRAIN,
        TrainProgressCategories.MODEL_UPLOAD,
    ) == ("dataset", "train", "model_upload")
    action = AddAction({"a": 1})
    assert action.progress.TRAIN == "train"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"a": "nope"}, "a: Input should be a valid integer"),
        ({}, "a: Field required"),
        ({"a": 1, "zzz": 2}, "zzz: Extra inputs are not permitted"),
    ],
)
def test_dispatch_validates_before_anything_runs(params, fragment):
    with pytest.raises(ParamsValidationError) as info:
        AddAction.dispatch(params, RuntimeContext())
    assert fragment in str(info.value)
    assert str(info.value).startswith("Invalid params for AddParams")


def test_params_must_be_an_object():
    with pytest.raises(ParamsValidationError, match="expected a JSON object"):
        AddAction.validate_params([1, 2])


def test_validation_error_does_not_echo_values():
    with pytest.raises(ParamsValidationError) as info:
        AddAction.validate_params({"a": "s3cr3t-value"})
    assert "s3cr3t-value" not in str(info.value)


def test_action_without_params_model_is_refused():
    with pytest.raises(ConfigurationError, match="NoParamsAction has no params model"):
        NoParamsAction.dispatch({}, RuntimeContext())


def test_client_without_backend_names_the_helpers():
    action = AddAction({"a": 1})
    with pytest.raises(RuntimeError) as info:
        _ = action.client
    for name in ("No client in context", "get_dataset()", "create_model()", "get_model()"):
        assert name in str(info.value)


def test_get_dataset_requires_dataset_id():
    action = ThreeStepAction({})
    with pytest.raises(ValueError, match="params.dataset_id is required"):
        action.get_dataset()
    with pytest.raises(ValueError, match="dataset_id is required"):
        AddAction({"a": 1}).get_dataset()  # no such field at all


def test_create_context_and_setup_steps_default():
    action = AddAction({"a": 2})
    ctx = action.create_context()
    assert isinstance(ctx, TrainContext)
    assert ctx.params.a == 2 and ctx.runtime_ctx is action.runtime_ctx
    reg = StepRegistry()
    action.setup_steps(reg)
    assert len(reg) == 0


def test_simple_action_run_calls_execute():
    assert AddAction({"a": 2, "b": 3}).run() == {"sum": 5}


def test_result_model_validates_result():
    class Out(BaseModel):
        sum: int

    class Typed(AddAction):
        result_model = Out

    class Wrong(AddAction):
        result_model = Out

        def execute(self):
            return {"total": 1}

    class Strict(Wrong):
        strict_result = True

    assert Typed({"a": 1}).run() == Out(sum=2)
    assert Wrong({"a": 1}).run() == {"total": 1}  # a mismatch warns and returns it, as upstream
    with pytest.raises(ConfigurationError, match="does not match result_model"):
        Strict({"a": 1}).run()
