"""Where a step runs. The orchestrator owns step semantics; a placement only
moves the work. The in-process placement lives here; the Ray actor
placement plugs into the same protocol from ``executors/ray/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

from synapse_ray.backend.retrying import cancel_scope
from synapse_ray.runtime.autolog import set_current as set_autolog
from synapse_ray.runtime.env import applied_env
from synapse_ray.steps.step import BaseStep, StepResult


class StepPlacement(Protocol):
    """Runs ``execute`` and ``rollback`` of steps somewhere.

    ``run_step`` returns the step's result and what the step left in the
    context: the same object in-process, or from another process the step's
    changes only (``ContextChanges``), which the orchestrator merges.
    ``rollback_step`` must run where ``run_step`` ran that step.
    ``crash_retries`` is how many times a step whose worker died is tried
    again (0 in-process: a crash there is the caller's own process dying).
    ``kill_running`` is the cancel fallback for a step that ignores the flag.
    """

    crash_retries: int

    def prepare(self, steps: list[BaseStep[Any]], ctx: Any) -> None: ...

    def run_step(self, step: BaseStep[Any], ctx: Any, attempt: int) -> tuple[Any, Any]: ...

    def rollback_step(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> Any: ...

    def kill_running(self) -> bool: ...

    def close(self) -> None: ...


@contextmanager
def user_code(ctx: Any) -> Iterator[None]:
    """Around every call into a step's code, wherever it runs: the run's env vars set,
    backend retries cut short by the run's cancel (their backoff waits on its token),
    and autolog's target cleared afterwards (workers are reused across runs)."""
    runtime = getattr(ctx, "runtime_ctx", None)
    token = getattr(runtime, "cancel_token", None)
    try:
        with applied_env(getattr(runtime, "env", None)), ExitStack() as scope:
            if token is not None:
                scope.enter_context(cancel_scope(token))
            yield
    finally:
        set_autolog(None)


def execute_step(step: BaseStep[Any], ctx: Any) -> Any:
    with user_code(ctx):
        return step.execute(ctx)


def rollback_step(step: BaseStep[Any], ctx: Any, result: StepResult) -> None:
    with user_code(ctx):
        step.rollback(ctx, result)


class InProcessPlacement:
    """Runs each step in the calling thread."""

    crash_retries = 0

    def prepare(self, steps: list[BaseStep[Any]], ctx: Any) -> None:
        return None

    def run_step(self, step: BaseStep[Any], ctx: Any, attempt: int) -> tuple[Any, Any]:
        return execute_step(step, ctx), ctx

    def rollback_step(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> Any:
        rollback_step(step, ctx, result)
        return ctx

    def kill_running(self) -> bool:
        return False  # a thread cannot be killed: cancellation here is cooperative only

    def close(self) -> None:
        return None
