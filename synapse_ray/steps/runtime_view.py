"""The runtime the orchestrator drives, for contexts built outside a run.

Upstream's tests (and plugins' own) build a step context around any object
with ``set_progress``, ``log`` and ``set_metrics`` and call
``Orchestrator(registry, context).execute()``. Steps report to that object
directly; the orchestrator's own bookkeeping (plan, step events, cancel) then
goes to a private reporter nobody reads.
"""

from __future__ import annotations

from typing import Any

from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.logging import get_logger
from synapse_ray.runtime.reporter import NullSink, ProgressReporter


class DetachedRuntime:
    """Progress, cancel and logging of a run that has no executor behind it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.progress = ProgressReporter(NullSink())
        self.cancel_token = CancelToken()
        self.step: str | None = None
        self.attempt = 1

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def bind_step(self, step: str | None, attempt: int = 1) -> None:
        self.step, self.attempt = step, attempt

    @property
    def logger(self) -> Any:
        return get_logger("synapse_ray", step=self.step, attempt=self.attempt)


def runtime_of(ctx: Any) -> Any:
    """The context's ``RuntimeContext``, or a detached one when it carries something else."""
    runtime = getattr(ctx, "runtime_ctx", None)
    return runtime if isinstance(runtime, RuntimeContext) else DetachedRuntime(runtime)
