from __future__ import annotations

import pickle
import threading

import pytest
from ray import cloudpickle

from synapse_ray import (
    ActionError,
    ContextPicklingError,
    ParamsValidationError,
    RunCancelledError,
    RuntimeContext,
    StepError,
    TrainContext,
)
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, NullSink, ProgressReporter
from synapse_ray.steps.context import check_picklable
from tests.core.actions import StepParams

DUMPERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


@pytest.fixture
def ray_pickler():
    """Contexts pickle attributes with the pickler the Ray wing installs (cloudpickle)."""
    from synapse_ray.runtime import pickling

    pickling.use_dumps(cloudpickle.dumps)
    yield
    pickling.use_dumps(pickle.dumps)


class ListSink:
    """A picklable sink standing in for a remote transport."""

    def __init__(self):
        self.events = []

    def send(self, events):
        self.events.extend(events)


@pytest.mark.parametrize("dumper", DUMPERS)
def test_runtime_context_round_trip(dumper):
    rt = RuntimeContext(
        run_id="r1",
        job_id="j1",
        env={"A": "1"},
        progress=ProgressReporter(ListSink()),
        action_name="act",
        work_dir="/tmp/x",
    )
    rt.bind_step("train", 2)
    rt.progress.begin_step("train", 2)
    rt.cancel_token.cancel("stop")
    rt.step_placement = object()  # driver-only, must not travel
    copy = dumper.loads(dumper.dumps(rt))
    assert (copy.run_id, copy.job_id, copy.env, copy.action_name) == ("r1", "j1", {"A": "1"}, "act")
    assert (copy.step, copy.attempt) == ("train", 2)
    assert copy.cancelled and copy.cancel_token.reason == "stop"
    assert copy.step_placement is None
    assert isinstance(copy.progress.sink, ListSink)
    assert (copy.progress.step, copy.progress.attempt) == ("train", 2)
    copy.set_progress(1, 2, "train")
    copy.progress.flush()
    assert copy.progress.sink.events[-1].current == 1


@pytest.mark.parametrize("dumper", DUMPERS)
def test_train_context_round_trip(dumper, ray_pickler):
    rt = RuntimeContext(run_id="r2")
    ctx = TrainContext(
        runtime_ctx=rt,
        params=StepParams(fail_at="x"),
        dataset={"rows": [1, 2]},
        model_path="/m",
        model={"id": 3},
    )
    ctx.extra = lambda x: x + 1  # needs cloudpickle; still travels
    copy = dumper.loads(dumper.dumps(ctx))
    assert copy.params == StepParams(fail_at="x")
    assert (copy.dataset, copy.model_path, copy.model) == ({"rows": [1, 2]}, "/m", {"id": 3})
    assert copy.runtime_ctx.run_id == "r2"
    assert copy.extra(1) == 2


@pytest.mark.parametrize("dumper", DUMPERS)
def test_attributes_naming_one_object_still_do_after_the_trip(dumper):
    """The values travel as one pickle, so a shared object stays shared, as in-process."""
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    ctx.history = ctx.dataset = [1, 2]
    copy = dumper.loads(dumper.dumps(ctx))
    assert copy.history is copy.dataset and copy.history == [1, 2]


def test_local_sink_does_not_travel():
    rt = RuntimeContext(progress=ProgressReporter(LocalSink(ProgressState())))
    copy = pickle.loads(pickle.dumps(rt))
    assert isinstance(copy.progress.sink, NullSink)


@pytest.mark.parametrize("dumper", DUMPERS)
def test_unpicklable_attribute_is_named(dumper):
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    ctx.lock = threading.Lock()
    with pytest.raises(ContextPicklingError) as info:
        dumper.dumps(ctx)
    assert "TrainContext attribute 'lock' (lock) cannot be pickled" in str(info.value)
    assert info.value.attribute == "lock"
    with pytest.raises(ContextPicklingError, match="Step 'train': TrainContext attribute 'lock'") as info2:
        check_picklable(ctx, step="train")
    assert info2.value.step == "train"


def test_client_is_not_pickled_and_rebuilt_lazily():
    rt = RuntimeContext()
    with pytest.raises(RuntimeError, match="No client in context"):
        _ = rt.client
    rt._client = object()  # a live client never travels
    copy = pickle.loads(pickle.dumps(rt))
    assert copy._client is None


def test_cancel_token_source_is_consulted():
    class Remote:
        flag = False

        def is_cancelled(self):
            return self.flag

    src = Remote()
    token = CancelToken(src)
    assert not token.cancelled
    src.flag = True
    assert token.cancelled
    with pytest.raises(RunCancelledError):
        token.raise_if_cancelled()


@pytest.mark.parametrize(
    "err",
    [
        StepError("Step 'x' failed: y", step="x", attempt=2, rollback_errors=["a: b"]),
        ActionError("Action 'a' failed", action="a"),
        ParamsValidationError("bad", errors=[{"field": "a", "message": "m"}]),
        RunCancelledError("cancelled", step="s", attempt=1),
        ContextPicklingError("x", attribute="lock"),
    ],
)
def test_errors_round_trip_through_pickle(err):
    copy = cloudpickle.loads(cloudpickle.dumps(err))
    assert type(copy) is type(err) and str(copy) == str(err)
    assert copy.fields == err.fields
    for key, value in err.fields.items():
        assert getattr(copy, key) == value


@pytest.mark.parametrize("value", [None, True, 7, 2**70, 1.5, 2j, "naïve", b"\x00raw"])
def test_atomic_values_pickle_the_same_through_the_fast_path(value, ray_pickler):
    from synapse_ray.runtime.pickling import Pickled

    pickled = Pickled.of(value)
    assert pickled.buffers == [] and pickled.refs == []
    assert pickled.header == cloudpickle.dumps(value, protocol=5)  # what the full pickler writes
    assert pickled.load() == value and type(pickled.load()) is type(value)
