"""Upstream-style orchestrator and registry tests: duck-typed runtime contexts, upstream's call shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from synapse_ray import BaseStep, BaseStepContext, Orchestrator, StepRegistry, StepResult


class RecordingRuntime:
    """What upstream's tests hand a context: any object with set_progress, log and set_metrics."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def set_progress(self, current: int, total: int, category: str | None = None) -> None:
        self.calls.append(("progress", (current, total, category)))

    def log(self, event: str, data: dict[str, Any], file: str | None = None) -> None:
        self.calls.append(("log", (event, data, file)))

    def set_metrics(self, value: dict[str, Any], category: str) -> None:
        self.calls.append(("metrics", (value, category)))


@dataclass
class MyContext(BaseStepContext):
    order: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


class Step(BaseStep[MyContext]):
    def __init__(self, name: str, weight: float = 1.0, fail: str | None = None, skip: bool = False) -> None:
        self._name, self._weight, self._fail, self._skip = name, weight, fail, skip

    @property
    def name(self) -> str:
        return self._name

    @property
    def progress_weight(self) -> float:
        return self._weight

    def can_skip(self, context: MyContext) -> bool:
        return self._skip

    def execute(self, context: MyContext) -> StepResult:
        context.order.append(self._name)
        context.set_progress(1, 2)
        context.set_metrics({"done": 1})
        context.log("ran", {"step": context.current_step})
        if self._fail == "raise":
            raise ValueError(f"{self._name} broke")
        if self._fail == "result":
            return StepResult(success=False, error="bad data")
        return StepResult(success=True, data={"name": self._name})

    def rollback(self, context: MyContext, result: StepResult) -> None:
        context.rolled_back.append(self._name)


def registry(*steps: Step) -> StepRegistry[MyContext]:
    reg: StepRegistry[MyContext] = StepRegistry()
    for step in steps:
        reg.register(step)
    return reg


def test_execute_runs_in_order_and_reports_to_the_duck_typed_runtime():
    rt = RecordingRuntime()
    ctx = MyContext(runtime_ctx=rt)  # type: ignore[arg-type]
    calls: list[tuple[int, int]] = []
    result = Orchestrator(
        registry(Step("a", 1), Step("b", 3)), ctx, lambda c, t: calls.append((c, t))
    ).execute()
    assert result == {"success": True, "steps_executed": 2, "steps_total": 2}
    assert ctx.order == ["a", "b"] and ctx.current_step is None
    assert calls == [(25, 100), (100, 100)]
    assert ("progress", (1, 2, "a")) in rt.calls and ("metrics", ({"done": 1}, "b")) in rt.calls
    assert ("log", ("ran", {"step": "b"}, None)) in rt.calls
    assert [r.data for r in ctx.step_results] == [{"name": "a"}, {"name": "b"}]


def test_keyword_call_shape_and_no_callback():
    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    orchestrator: Orchestrator[MyContext] = Orchestrator[MyContext](registry=registry(Step("a")), context=ctx)
    out = orchestrator.execute()
    assert out["steps_executed"] == 1


def test_a_raising_step_fails_with_runtime_error_after_rolling_back_in_reverse():
    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    orch = Orchestrator(registry(Step("a"), Step("b"), Step("c", fail="raise"), Step("d")), ctx)
    with pytest.raises(RuntimeError, match="Step 'c' failed: c broke"):
        orch.execute()
    assert ctx.order == ["a", "b", "c"] and ctx.rolled_back == ["c", "b", "a"]
    assert [r.success for r in ctx.step_results] == [True, True, False]
    assert ctx.current_step is None


def test_a_step_returning_failure_fails_with_its_error():
    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Step 'b' failed: bad data"):
        Orchestrator(registry(Step("a"), Step("b", fail="result")), ctx).execute()
    assert ctx.rolled_back == ["b", "a"] and ctx.errors == ["b: bad data"]


def test_skipped_steps_count_for_progress_but_are_not_rolled_back():
    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    calls: list[int] = []
    with pytest.raises(RuntimeError):
        Orchestrator(
            registry(Step("a", skip=True), Step("b", fail="raise")), ctx, lambda c, t: calls.append(c)
        ).execute()
    assert calls == [50] and ctx.rolled_back == ["b"]
    assert ctx.step_results[0].skipped and ctx.step_results[0].success


def test_rollback_failure_is_recorded_and_does_not_mask_the_step_error():
    class BadRollback(Step):
        def rollback(self, context: MyContext, result: StepResult) -> None:
            raise OSError("disk gone")

    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Step 'b' failed"):
        Orchestrator(registry(BadRollback("a"), Step("b", fail="raise")), ctx).execute()
    assert ctx.errors == ["Rollback failed for step 'a': OSError: disk gone"]


def test_set_metrics_outside_a_step_needs_a_category():
    ctx = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="category must be given"):
        ctx.set_metrics({"x": 1})
    ctx.set_metrics({"x": 1}, "eval")
    ctx.log_message("hi {n}", n=1)
    ctx.log_dev_event("dbg", {"k": 1})
    assert ctx.runtime_ctx.calls[-3:] == [
        ("metrics", ({"x": 1}, "eval")),
        ("log", ("message", {"content": "hi 1", "context": "info"}, None)),
        ("log", ("dev_event", {"message": "dbg", "data": {"k": 1}}, None)),
    ]


def test_registry_weight_views():
    class Proportioned(Step):
        progress_proportion = 40

    reg = registry(Step("a", 0.2), Proportioned("b", 0.5), Step("c", 0.3))
    assert reg.total_weight == pytest.approx(1.0)
    assert reg.get_step_proportions() == {"b": 40}
    assert reg.get_step_orders() == {"a": 0, "b": 1, "c": 2}
    reg.insert_before("a", Step("z", 0.5))
    assert reg.get_step_orders() == {"z": 0, "a": 1, "b": 2, "c": 3}
    assert reg.total_weight == pytest.approx(1.5)


def test_our_call_shape_still_works_with_a_placement():
    from synapse_ray.runtime.context import RuntimeContext
    from synapse_ray.steps.placement import InProcessPlacement

    ctx = MyContext(runtime_ctx=RuntimeContext())
    summary = Orchestrator(registry(Step("a")), InProcessPlacement()).run(ctx)
    assert summary.steps_executed == 1 and ctx.order == ["a"]
    with pytest.raises(ValueError, match="needs a context"):
        Orchestrator(registry(Step("a"))).execute()


def test_upstream_step_utilities_log_time_and_validate():
    from synapse_ray import LoggingStep, TimingStep, ValidationStep

    rt = RecordingRuntime()
    ctx = MyContext(runtime_ctx=rt)  # type: ignore[arg-type]
    reg = registry(Step("load", 2))
    reg.register(TimingStep(Step("fit", 3)))
    reg.register(LoggingStep(Step("save", 1)))
    assert [s.name for s in reg.get_steps()] == ["load", "timed_fit", "logged_save"]
    assert reg.total_weight == 6
    Orchestrator(reg, ctx).execute()
    assert ctx.order == ["load", "fit", "save"]
    assert ctx.step_results[1].data["duration_seconds"] >= 0
    logged = [call[1] for call in rt.calls if call[0] == "log" and call[1][0].startswith("step_")]
    assert [event for event, _, _ in logged] == ["step_start", "step_end"]
    assert logged[1][1]["step"] == "save" and logged[1][1]["success"] is True

    ctx2 = MyContext(runtime_ctx=RecordingRuntime())  # type: ignore[arg-type]
    checks = registry(Step("a"))
    checks.register(ValidationStep(lambda c: (bool(c.order == ["x"]), "a ran, not x"), name="check"))
    checks.register(LoggingStep(Step("b")))
    with pytest.raises(RuntimeError, match="Step 'check' failed: a ran, not x"):
        Orchestrator(checks, ctx2).execute()
    assert ctx2.rolled_back == ["a"] and ctx2.order == ["a"]
