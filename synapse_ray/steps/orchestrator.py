"""The one state machine of a run.

Ordering, skip, retry, crash retry, cancel, rollback, step events and error
typing live here and nowhere else. A simple action is a one-step plan (see
``simple.py``); executors only pass a placement that decides where each step
executes, and read the outcome through ``settle``.

Retries: a step is tried again when its ``RetryPolicy`` says so; a worker
crash (``WorkerCrashedError``: node lost, actor killed) is also retried up to
the placement's ``crash_retries`` whatever the step's policy. A crash that
stays final surfaces as ``WorkerCrashedError`` naming the step and attempt.

Rollback rule: when a step fails (raises, returns ``success=False``, returns
something that is not a ``StepResult``, or is cancelled), every step that
started is rolled back in reverse order, *including the failed step itself*
(it may have half-done work; its ``rollback`` gets the failed result).
Skipped steps are not rolled back. A rollback error is logged and recorded in
``error.rollback_errors``; it never replaces the original error.

Cancel rule: a failure that happens after the run was asked to stop means the
run was CANCELLED (the failure becomes the cause). ``settle`` applies the same
rule to failures that happen outside a step (a killed task, a lost worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from synapse_ray.errors import (
    ActionError,
    ConfigurationError,
    RunCancelledError,
    StepError,
    StepResultError,
    SynapseRayError,
    WorkerCrashedError,
)
from synapse_ray.runtime.progress import ProgressPlan
from synapse_ray.runtime.status import RunStatus, StepStatus
from synapse_ray.steps.changes import ContextChanges, apply
from synapse_ray.steps.context import BaseStepContext
from synapse_ray.steps.placement import InProcessPlacement, StepPlacement
from synapse_ray.steps.registry import StepRegistry
from synapse_ray.steps.retry import NO_RETRY, CrashBudget
from synapse_ray.steps.runtime_view import runtime_of
from synapse_ray.steps.simple import ExecuteStep
from synapse_ray.steps.step import BaseStep, StepResult


@dataclass
class _Started:
    step: BaseStep[Any]
    result: StepResult
    attempt: int


@dataclass
class RunSummary:
    steps_total: int
    steps_executed: int = 0
    steps_skipped: int = 0
    results: dict[str, StepResult] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": True,
            "steps_executed": self.steps_executed,
            "steps_total": self.steps_total,
            "steps_skipped": self.steps_skipped,
        }


def build_plan(steps: list[BaseStep[Any]]) -> ProgressPlan:
    """Steps weighed by ``progress_weight``, or by ``progress_proportion`` when any step declares one."""
    by_proportion = any(getattr(s, "progress_proportion", 0) > 0 for s in steps)
    return ProgressPlan.from_weights(
        [(s.name, s.progress_proportion if by_proportion else s.progress_weight) for s in steps],
        {s.name: s.category_weights for s in steps if getattr(s, "category_weights", None)},
    )


C = TypeVar("C")


class Orchestrator(Generic[C]):
    """Runs a registry's steps (or a list of steps) against a context through a placement.

    Two call shapes: ours, ``Orchestrator(steps, placement).run(ctx)``, and
    upstream's, ``Orchestrator(registry, context, progress_callback=None).execute()``.
    The second argument is taken as the context when it is a step context
    (anything with a ``runtime_ctx``), else as the placement.
    ``progress_callback(percent, 100)`` is called after each step ends, as upstream does.
    """

    def __init__(
        self,
        registry: StepRegistry[Any] | list[BaseStep[Any]],
        placement: StepPlacement | Any = None,
        progress_callback: Callable[[int, int], None] | None = None,
        *,
        context: Any = None,
    ) -> None:
        if placement is not None and (
            isinstance(placement, BaseStepContext) or hasattr(placement, "runtime_ctx")
        ):
            context, placement = placement, None
        self.registry = registry
        self.placement: StepPlacement = placement or InProcessPlacement()
        self.context = context
        self.progress_callback = progress_callback

    def execute(self) -> dict[str, Any]:
        """Upstream's entry point: run the steps against the context given at construction.

        Returns upstream's summary exactly (``success``, ``steps_executed``, ``steps_total``).
        """
        if self.context is None:
            raise ConfigurationError(
                "Orchestrator.execute() needs a context: Orchestrator(registry, context)"
            )
        summary = self.run(self.context)
        return {"success": True, "steps_executed": summary.steps_executed, "steps_total": summary.steps_total}

    def _report(self, steps: list[BaseStep[Any]], done: int) -> None:
        if self.progress_callback is None:
            return
        total = sum(s.progress_weight for s in steps)
        completed = sum(s.progress_weight for s in steps[:done])
        if total > 0:
            self.progress_callback(int(completed / total * 100), 100)

    def steps(self) -> list[BaseStep[Any]]:
        if isinstance(self.registry, StepRegistry):
            return self.registry.get_steps()
        return list(self.registry)

    def run(self, ctx: BaseStepContext) -> RunSummary:
        steps = self.steps()
        if not steps:
            raise ConfigurationError("No steps registered: setup_steps() added nothing to run")
        plan = build_plan(steps)  # validates weights before anything runs
        rt = runtime_of(ctx)
        rt.progress.start_plan(plan)
        summary = RunSummary(steps_total=len(steps))
        started: list[_Started] = []
        try:
            self.placement.prepare(steps, ctx)
            for done, step in enumerate(steps):
                if rt.cancelled:
                    raise RunCancelledError(
                        f"Run cancelled before step '{step.name}'", step=step.name, attempt=0
                    )
                ctx.current_step = step.name  # can_skip sees it too, as upstream
                try:
                    skip = step.can_skip(ctx)
                except Exception as exc:  # noqa: BLE001 - a broken can_skip fails its step
                    raise _step_error(step, 1, exc, "can_skip() raised ") from exc
                if skip:
                    rt.progress.step_event(step.name, 1, StepStatus.SKIPPED.value)
                    summary.steps_skipped += 1
                    result = StepResult(skipped=True)
                    summary.results[step.name] = result
                    ctx.step_results.append(result)
                    self._report(steps, done + 1)
                    continue
                result = self._run_step(step, ctx, started)
                summary.results[step.name] = result
                if result.skipped:
                    summary.steps_skipped += 1
                else:
                    summary.steps_executed += 1
                self._report(steps, done + 1)
        except (StepError, RunCancelledError, WorkerCrashedError) as exc:
            exc.rollback_errors = self._rollback(started, ctx)  # type: ignore[attr-defined]
            exc.fields["rollback_errors"] = exc.rollback_errors  # type: ignore[attr-defined]
            raise
        except SynapseRayError as exc:  # bad input found while preparing: nothing ran
            exc.rollback_errors = self._rollback(started, ctx)  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # an orchestration fault: completed steps still roll back
            err = StepError(
                f"Step-based run failed: {type(exc).__name__}: {exc}",
                step=ctx.current_step,
                attempt=ctx.attempt,
                rollback_errors=self._rollback(started, ctx),
            )
            raise err from exc
        finally:
            ctx.current_step = None  # as upstream: no step is current once the run is over
            rt.bind_step(None, 1)
            self.placement.close()
        return summary

    # -- one step with retries -----------------------------------------
    def _run_step(self, step: BaseStep[Any], ctx: BaseStepContext, started: list[_Started]) -> StepResult:
        rt = runtime_of(ctx)
        policy = step.retry or NO_RETRY
        crashes = CrashBudget(self.placement.crash_retries)
        attempt = 0
        while True:
            attempt += 1
            ctx.current_step, ctx.attempt = step.name, attempt
            rt.bind_step(step.name, attempt)
            rt.progress.begin_step(step.name, attempt)
            try:
                result, after = self.placement.run_step(step, ctx, attempt)
            except Exception as exc:  # noqa: BLE001 - every step failure is handled here
                started.append(_Started(step, StepResult(success=False, error=str(exc)), attempt))
                if isinstance(exc, RunCancelledError) or rt.cancelled:
                    rt.progress.end_step(StepStatus.CANCELLED.value, str(exc))
                    raise _cancelled(f"during step '{step.name}' (attempt {attempt})", step, attempt) from exc
                rt.progress.end_step(StepStatus.FAILED.value, _short(exc))
                crashed = isinstance(exc, WorkerCrashedError) and crashes.spend()
                if not (crashed or policy.should_retry(exc, attempt)):
                    ctx.step_results.append(started[-1].result)  # as upstream: the failed result is kept
                    if isinstance(exc, WorkerCrashedError):
                        raise _crash_error(step, attempt, exc) from exc
                    raise _step_error(step, attempt, exc) from exc
                delay = 0.0 if crashed else policy.delay_for(attempt)
                rt.logger.warning("step_retry", error=_short(exc), delay=delay, crashed=crashed)
                if delay and rt.cancel_token.wait(delay):
                    raise _cancelled(f"while waiting to retry step '{step.name}'", step, attempt) from exc
                started.pop()  # the retry replaces this attempt; only the last one rolls back
                continue
            try:
                _merge(ctx, after)
            except TypeError as exc:
                started.append(_Started(step, StepResult(success=False, error=str(exc)), attempt))
                raise _step_error(step, attempt, exc) from exc
            if not isinstance(result, StepResult):
                started.append(_Started(step, StepResult(success=False), attempt))
                message = (
                    f"Step '{step.name}' failed: execute() returned {type(result).__name__}, "
                    "expected a StepResult"
                )
                rt.progress.end_step(StepStatus.FAILED.value, message)
                raise StepResultError(message, step=step.name, attempt=attempt)
            ctx.step_results.append(result)
            if not result.success:
                started.append(_Started(step, result, attempt))
                error = result.error or "step returned success=False"
                ctx.errors.append(f"{step.name}: {error}")
                rt.progress.end_step(StepStatus.FAILED.value, error)
                raise StepError(f"Step '{step.name}' failed: {error}", step=step.name, attempt=attempt)
            if result.skipped:
                rt.progress.end_step(StepStatus.SKIPPED.value)
            else:
                started.append(_Started(step, result, attempt))
                rt.progress.end_step(StepStatus.SUCCEEDED.value)
            return result

    # -- rollback ------------------------------------------------------
    def _rollback(self, started: list[_Started], ctx: BaseStepContext) -> list[str]:
        rt = runtime_of(ctx)
        errors: list[str] = []
        for item in reversed(started):
            rt.bind_step(item.step.name, item.attempt)
            try:
                after = self.placement.rollback_step(item.step, ctx, item.result)
                _merge(ctx, after)
                rt.progress.step_event(item.step.name, item.attempt, StepStatus.ROLLED_BACK.value)
                rt.logger.info("step_rolled_back")
            except Exception as exc:  # noqa: BLE001 - recorded, never masks the original
                errors.append(f"{item.step.name}: {_short(exc)}")
                ctx.errors.append(f"Rollback failed for step '{item.step.name}': {_short(exc)}")
                rt.logger.error("step_rollback_failed", error=_short(exc))
        return errors


# -- the outcome of a run, decided once -------------------------------------
def settle(error: BaseException | None, cancelled: bool, action_name: str = "") -> BaseException | None:
    """The error a run ends with: a failure after a cancel request means CANCELLED.

    Anything that is not one of ours yet (a failure outside any step) is
    wrapped so callers catch one hierarchy; the original is the cause.
    """
    if error is None:
        return None
    if cancelled and not isinstance(error, RunCancelledError):
        err: BaseException = RunCancelledError(f"Run cancelled: {error}", reason="cancelled by user")
        err.__cause__ = error
        return err
    if isinstance(error, SynapseRayError) or not isinstance(error, Exception):
        return error
    wrapped = ActionError(
        f"Action '{action_name}' failed: {_short(error)}", action=action_name, cause_type=type(error).__name__
    )
    wrapped.__cause__ = error
    return wrapped


def status_for(error: BaseException | None) -> RunStatus:
    if error is None:
        return RunStatus.SUCCEEDED
    if isinstance(error, RunCancelledError):
        return RunStatus.CANCELLED
    return RunStatus.FAILED


def _cancelled(where: str, step: BaseStep[Any], attempt: int) -> RunCancelledError:
    return RunCancelledError(f"Run cancelled {where}", step=step.name, attempt=attempt)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _step_error(step: BaseStep[Any], attempt: int, exc: BaseException, what: str = "") -> StepError:
    if isinstance(step, ExecuteStep):
        return ActionError(
            f"Action '{step.action_name}' failed: {what}{_short(exc)}",
            action=step.action_name,
            step=step.name,
            attempt=attempt,
            cause_type=type(exc).__name__,
        )
    return StepError(
        f"Step '{step.name}' failed: {what}{str(exc) or type(exc).__name__}",
        step=step.name,
        attempt=attempt,
        cause_type=type(exc).__name__,
    )


def _crash_error(step: BaseStep[Any], attempt: int, exc: BaseException) -> WorkerCrashedError:
    what = f"action '{step.action_name}'" if isinstance(step, ExecuteStep) else f"step '{step.name}'"
    return WorkerCrashedError(
        f"The worker running {what} died (attempt {attempt}, no crash retries left): {exc}",
        step=step.name,
        attempt=attempt,
    )


def _merge(ctx: BaseStepContext, after: Any) -> None:
    """Take what a step left in its context without losing the driver's live runtime.

    A placement returns either the context itself (in-process), the step's
    changes (``ContextChanges``: what an actor placement sends back), or a
    whole context of the same type.
    """
    if after is None or after is ctx:
        return
    if isinstance(after, ContextChanges):
        apply(ctx, after)
        return
    if type(after) is not type(ctx):
        raise TypeError(f"placement returned {type(after).__name__}, expected {type(ctx).__name__}")
    for key, value in after.__dict__.items():
        if key != "runtime_ctx":
            setattr(ctx, key, value)
