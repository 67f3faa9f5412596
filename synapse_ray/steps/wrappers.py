"""Upstream's step utilities: wrap a step to log it or time it, or validate the context.

``LoggingStep(step)`` (name ``logged_<name>``) logs ``step_start`` and
``step_end`` (elapsed seconds, success, skipped) and ``step_rollback``;
``TimingStep(step)`` (name ``timed_<name>``) adds ``duration_seconds`` to the
result's data; ``ValidationStep(validator)`` fails with the validator's message
when ``validator(context)`` returns ``(False, message)``. Wrappers take the
wrapped step's weight, proportion, retry policy and resources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from synapse_ray.steps.step import BaseStep, StepResult


class _Wrapper(BaseStep[Any]):
    prefix = ""

    def __init__(self, step: BaseStep[Any]) -> None:
        self.wrapped = step

    @property  # type: ignore[override]
    def name(self) -> str:
        return f"{self.prefix}{self.wrapped.name}"

    @property  # type: ignore[override]
    def progress_weight(self) -> float:
        return self.wrapped.progress_weight

    @property  # type: ignore[override]
    def progress_proportion(self) -> int:
        return self.wrapped.progress_proportion

    @property  # type: ignore[override]
    def retry(self) -> Any:
        return self.wrapped.retry

    @property  # type: ignore[override]
    def resources(self) -> Any:
        return self.wrapped.resources

    def can_skip(self, context: Any) -> bool:
        return self.wrapped.can_skip(context)

    def rollback(self, context: Any, result: StepResult) -> None:
        self.wrapped.rollback(context, result)

    def execute(self, context: Any) -> StepResult:
        return self.wrapped.execute(context)


class LoggingStep(_Wrapper):
    prefix = "logged_"

    def execute(self, context: Any) -> StepResult:
        name = self.wrapped.name
        context.log("step_start", {"step": name})
        started = time.perf_counter()
        result = self.wrapped.execute(context)
        elapsed = round(time.perf_counter() - started, 3)
        success, skipped = getattr(result, "success", False), getattr(result, "skipped", False)
        context.log("step_end", {"step": name, "elapsed": elapsed, "success": success, "skipped": skipped})
        return result

    def rollback(self, context: Any, result: StepResult) -> None:
        context.log("step_rollback", {"step": self.wrapped.name})
        self.wrapped.rollback(context, result)


class TimingStep(_Wrapper):
    prefix = "timed_"

    def execute(self, context: Any) -> StepResult:
        started = time.perf_counter()
        result = self.wrapped.execute(context)
        if isinstance(result, StepResult):
            result.data["duration_seconds"] = round(time.perf_counter() - started, 6)
        return result


class ValidationStep(BaseStep[Any]):
    def __init__(
        self,
        validator: Callable[[Any], tuple[bool, str | None]],
        name: str = "validate",
        progress_weight: float = 0.05,
    ) -> None:
        self.validator = validator
        self._name = name
        self._weight = progress_weight

    @property  # type: ignore[override]
    def name(self) -> str:
        return self._name

    @property  # type: ignore[override]
    def progress_weight(self) -> float:
        return self._weight

    def execute(self, context: Any) -> StepResult:
        valid, error = self.validator(context)
        return StepResult() if valid else StepResult(success=False, error=error or "validation failed")
