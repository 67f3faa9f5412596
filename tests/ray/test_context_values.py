"""Context values on Ray (one node): changes only, large values by reference, zero-copy arrays."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from synapse_ray import RayExecutor, RuntimeContext, StepError, StepResult, TrainContext
from synapse_ray.errors import ArtifactError, ContextPicklingError
from synapse_ray.executors.ray.kept import KeptRuntime, ResultsTail
from synapse_ray.executors.ray.placement import RayActorPlacement
from synapse_ray.executors.ray.values import StoredValue
from synapse_ray.steps.orchestrator import _merge
from synapse_ray.steps.step import BaseStep, StepResources
from tests.ray.conftest import alive_actors, wait_until
from tests.ray.data_actions import DataAction

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

MIB = 1 << 20


@pytest.mark.parametrize("reuse", [False, True], ids=["actor-per-step", "reuse"])
def test_large_array_reaches_later_steps_zero_copy_and_the_driver_holds_a_reference(reuse):
    result = RayExecutor(reuse_actors=reuse).execute(DataAction, {"mib": 8})
    expected = float(np.arange(8 << 17, dtype=np.float64).sum())
    make, *readers = result["seen"]
    assert len(readers) == 2
    for seen in readers:
        assert seen["type"] == "ndarray" and seen["sum"] == expected and seen["nbytes"] == 8 * MIB
        assert seen["writeable"] is False and seen["owndata"] is False  # a view of the object store
        assert seen["weights_ok"] and seen["info"].startswith("made on ")
    if not reuse:
        assert len({make["pid"], *(s["pid"] for s in readers)}) == 3  # three actors, the first one gone
    assert result["driver_holds"] == "StoredValue" and result["driver_nbytes"] >= 8 * MIB
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)


class SetStep(BaseStep[TrainContext]):
    def __init__(self, name: str, **values: object) -> None:
        self.name = name  # type: ignore[misc]
        self.values = values

    def execute(self, ctx: TrainContext) -> StepResult:
        for key, value in self.values.items():
            setattr(ctx, key, value() if callable(value) else value)
        return StepResult()


class ReadOnlyStep(BaseStep[TrainContext]):
    name = "read_only"

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(data={"sum": float(ctx.dataset.sum()), "table": dict(ctx.table)})


class MutateStep(BaseStep[TrainContext]):
    name = "mutate"

    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.table["b"] = 2
        return StepResult()


def test_a_step_sends_back_only_what_it_set_or_changed():
    placement = RayActorPlacement(reuse=True)
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    try:
        make = SetStep("make", dataset=lambda: np.ones(2 * MIB // 8), table={"a": 1})
        _, changes = placement.run_step(make, ctx, 1)
        assert set(changes.values) == {"dataset", "table"} and not changes.removed
        stored = changes.values["dataset"]
        assert isinstance(stored, StoredValue) and stored.ref is not None and stored.nbytes >= 2 * MIB
        assert changes.values["table"] == {"a": 1}  # small: rides back with the result
        _merge(ctx, changes)

        result, changes = placement.run_step(ReadOnlyStep(), ctx, 1)
        assert result.data == {"sum": float(2 * MIB // 8), "table": {"a": 1}}
        assert not changes  # read only: nothing travels back
        _, changes = placement.run_step(MutateStep(), ctx, 1)
        assert changes.values == {"table": {"a": 1, "b": 2}}  # changed in place
        _merge(ctx, changes)
        assert ctx.dataset is stored  # the driver still holds the first step's reference
    finally:
        placement.close()


@pytest.mark.parametrize(("threshold", "stored"), [(0, {"dataset", "note"}), (64 * MIB, set())])
def test_store_threshold_decides_what_goes_by_reference(threshold, stored):
    placement = RayActorPlacement(store_threshold=threshold)
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    try:
        step = SetStep("make", dataset=lambda: np.ones(2 * MIB // 8), note="small")
        _, changes = placement.run_step(step, ctx, 1)
        assert {k for k, v in changes.values.items() if isinstance(v, StoredValue)} == stored
        _merge(ctx, changes)
        result, _ = placement.run_step(ReadOnlyStepNoTable(), ctx, 1)
        assert result.data == {"sum": float(2 * MIB // 8), "note": "small"}
    finally:
        placement.close()


class ReadOnlyStepNoTable(BaseStep[TrainContext]):
    name = "read_note"

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(data={"sum": float(ctx.dataset.sum()), "note": ctx.note})


def test_store_threshold_must_be_bytes():
    from synapse_ray import ConfigurationError

    with pytest.raises(ConfigurationError, match="store_threshold must be a number of bytes"):
        RayExecutor(store_threshold=-1)


def test_unpicklable_value_set_by_a_step_is_named():
    placement = RayActorPlacement()
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    try:
        match = "Step 'locker': TrainContext attribute 'lock'"
        with pytest.raises(ContextPicklingError, match=match) as info:
            placement.run_step(SetStep("locker", lock=threading.Lock), ctx, 1)
        assert info.value.attribute == "lock" and info.value.step == "locker"
    finally:
        placement.close()


def test_artifact_file_missing_at_transfer_names_step_and_file():
    with pytest.raises(StepError) as info:
        RayExecutor(reuse_actors=False).execute(DataAction, {"mib": 1, "dangling_link": True})
    cause = info.value.__cause__
    assert isinstance(cause, ArtifactError) and cause.step == "make"
    assert cause.path.endswith("checkpoint/weights-link.bin")
    assert "Step 'make': artifact 'checkpoint': file" in str(cause) and "disappeared" in str(cause)


class ReadOtherStep(BaseStep[TrainContext]):
    name = "read_other"

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(data={"blob": (len(ctx.blob), ctx.blob[:3]), "rows": (len(ctx.rows), ctx.rows[-1])})


def test_bytes_and_plain_python_objects_go_by_reference_too():
    placement = RayActorPlacement(reuse=False)
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    try:
        make = SetStep(
            "make",
            blob=lambda: b"abc" * (MIB // 2),
            rows=lambda: [{"i": i, "s": str(i)} for i in range(100_000)],
        )
        _, changes = placement.run_step(make, ctx, 1)
        assert {k: type(v).__name__ for k, v in changes.values.items()} == {
            "blob": "StoredValue",
            "rows": "StoredValue",
        }
        assert changes.values["blob"].type_name == "bytes" and changes.values["rows"].type_name == "list"
        _merge(ctx, changes)
        result, changes = placement.run_step(ReadOtherStep(), ctx, 1)
        assert result.data == {
            "blob": (3 * (MIB // 2), b"abc"),
            "rows": (100_000, {"i": 99_999, "s": "99999"}),
        }
        assert not changes
    finally:
        placement.close()


def _frame() -> object:
    import pandas as pd

    return pd.DataFrame({"x": range(200_000), "y": [float(i) / 2 for i in range(200_000)]})


def _arrow() -> object:
    import pyarrow as pa

    return pa.table({"x": list(range(200_000))})


class ReadTablesStep(BaseStep[TrainContext]):
    name = "read_tables"

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(
            data={
                "frame": (type(ctx.frame).__name__, len(ctx.frame), float(ctx.frame["y"].iloc[-1])),
                "arrow": (type(ctx.arrow).__name__, ctx.arrow.num_rows, ctx.arrow.column("x")[-1].as_py()),
            }
        )


def test_pandas_and_arrow_tables_go_by_reference_and_arrive_as_themselves():
    placement = RayActorPlacement(reuse=False)
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    try:
        _, changes = placement.run_step(SetStep("make", frame=_frame, arrow=_arrow), ctx, 1)
        assert {k: type(v).__name__ for k, v in changes.values.items()} == {
            "frame": "StoredValue",
            "arrow": "StoredValue",
        }
        assert changes.values["frame"].type_name == "DataFrame"
        _merge(ctx, changes)
        result, changes = placement.run_step(ReadTablesStep(), ctx, 1)
        assert result.data == {
            "frame": ("DataFrame", 200_000, 99_999.5),
            "arrow": ("Table", 200_000, 199_999),
        }
        assert not changes
    finally:
        placement.close()


class SeenResultsStep(BaseStep[TrainContext]):
    """Returns what it saw of ``ctx.step_results``; fails its first attempt when asked."""

    def __init__(self, name: str, fail_once: bool = False, cpus: float | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.fail_once = fail_once
        if cpus is not None:
            self.resources = StepResources(num_cpus=cpus)  # type: ignore[misc]

    def execute(self, ctx: TrainContext) -> StepResult:
        if self.fail_once and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        seen = [r.data.get("name") for r in ctx.step_results]
        rt = ctx.runtime_ctx
        bound = (rt.step, rt.attempt, rt.progress.step, rt.progress.attempt, rt.run_attempt)
        assert bound == (self.name, ctx.attempt, self.name, ctx.attempt, 1), bound
        data = {"name": self.name, "seen": seen, "pid": os.getpid(), "runtime": id(rt), "run": rt.run_id}
        return StepResult(data=data)


def test_a_reused_actor_keeps_the_runtime_and_gets_only_new_step_results():
    placement = RayActorPlacement(reuse=True)
    ctx = TrainContext(runtime_ctx=RuntimeContext(), params=None)
    shipped: list[tuple[str, int, int]] = []  # per call: all or a tail, from which result, how many
    runtimes: list[str] = []  # per call: the runtime context itself, or the step's bindings only
    held = placement._held
    real_results, real_runtime = held.results_for, held.runtime_for

    def record(actor: object, results: list[StepResult]) -> object:
        sent = real_results(actor, results)
        tail = isinstance(sent, ResultsTail)
        shipped.append(("tail", sent.start, len(sent.items)) if tail else ("all", 0, len(sent)))
        return sent

    def record_runtime(actor: object, runtime: RuntimeContext) -> object:
        sent = real_runtime(actor, runtime)
        runtimes.append("kept" if isinstance(sent, KeptRuntime) else "all")
        return sent

    held.results_for = record  # type: ignore[method-assign]
    held.runtime_for = record_runtime  # type: ignore[method-assign]
    steps = [
        SeenResultsStep("a"),
        SeenResultsStep("b"),
        SeenResultsStep("c", fail_once=True),  # the failed call: the retry sends every result again
        SeenResultsStep("d"),
        SeenResultsStep("e", cpus=0.5),  # other options: a new actor, which gets every result
        SeenResultsStep("f", cpus=0.5),
    ]
    try:
        pids = []
        for step in steps:
            for attempt in (1, 2):
                ctx.attempt = attempt
                ctx.runtime_ctx.bind_step(step.name, attempt)
                ctx.runtime_ctx.progress.step, ctx.runtime_ctx.progress.attempt = step.name, attempt
                try:
                    result, changes = placement.run_step(step, ctx, attempt)
                except Exception as exc:  # noqa: BLE001 - the planned first failure of "c"
                    assert "first attempt fails" in str(exc)
                    continue
                break
            _merge(ctx, changes)
            assert result.data["seen"] == [s.name for s in steps[: len(ctx.step_results)]]
            ctx.step_results.append(result)
            pids.append((result.data["pid"], result.data["runtime"]))
            assert result.data["run"] == ctx.runtime_ctx.run_id
    finally:
        placement.close()
    # one actor (and one runtime object in it) for a..d, since the retry of c; another for e, f
    assert len({pids[0], pids[1]}) == 1 and len(set(pids[2:4])) == 1 and len(set(pids[4:])) == 1
    assert pids[1][0] == pids[2][0] and pids[1][1] != pids[2][1] and pids[3][0] != pids[4][0]
    assert runtimes == ["all", "kept", "kept", "all", "kept", "all", "kept"]
    assert shipped == [
        ("all", 0, 0),  # a: the first call to the actor
        ("tail", 0, 1),  # b: only a's result
        ("tail", 1, 1),  # c, attempt 1: only b's (then it fails)
        ("all", 0, 2),  # c, attempt 2: all of them, after the failure
        ("tail", 2, 1),  # d: only c's
        ("all", 0, 4),  # e: a new actor gets all four
        ("tail", 4, 1),  # f: only e's
    ]
