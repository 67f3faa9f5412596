"""Where a step runs. The orchestrator owns step semantics; a placement only
moves the work. The in-process placement lives here; the Ray actor
placement plugs into the same protocol from ``executors/``.
"""

from __future__ import annotations

from typing import Any, Protocol

from synapse_ray.steps.step import BaseStep, StepResult


class StepPlacement(Protocol):
    """Runs ``execute`` and ``rollback`` of steps somewhere.

    ``run_step`` returns the step's result and the context as it stands after
    the step (the same object in-process, a returned copy from another
    process). ``rollback_step`` must run where ``run_step`` ran that step.
    """

    def prepare(self, steps: list[BaseStep[Any]], ctx: Any) -> None: ...

    def run_step(self, step: BaseStep[Any], ctx: Any, attempt: int) -> tuple[Any, Any]: ...

    def rollback_step(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> Any: ...

    def close(self) -> None: ...


class InProcessPlacement:
    """Runs each step in the calling thread."""

    def prepare(self, steps: list[BaseStep[Any]], ctx: Any) -> None:
        return None

    def run_step(self, step: BaseStep[Any], ctx: Any, attempt: int) -> tuple[Any, Any]:
        return step.execute(ctx), ctx

    def rollback_step(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> Any:
        step.rollback(ctx, result)
        return ctx

    def close(self) -> None:
        return None
