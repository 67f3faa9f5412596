"""What a reused step actor keeps between steps, so the driver sends only the rest.

With ``reuse_actors``, consecutive steps with the same options run in one
actor. Before each step the driver used to ship the whole context, including
two parts that a reused actor already had: the run's runtime context, which
does not change between steps, and ``step_results``, to which the driver only
appends. The driver now records what the actor holds (``ActorCopy``) and sends
a ``KeptRuntime`` (the step's bindings) and a ``ResultsTail`` (the results the
actor has not seen) in their place; the actor puts its kept copies back
(``runtime_in``, ``results_in``). After a failed call, or to a new actor,
everything is sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from synapse_ray.runtime.reporter import ProgressReporter


@dataclass
class ResultsTail:
    """``ctx.step_results`` as shipped to a reused step actor: only what it has not seen.

    The driver only ever appends to ``step_results``, and the actor keeps the
    list it was sent last, so shipping the whole list before every step made
    each step cost more than the one before (about 0.6 ms a step at 100 steps).
    """

    start: int
    items: list[Any]


@dataclass
class KeptRuntime:
    """``ctx.runtime_ctx`` as shipped to a reused step actor: only the step's bindings.

    The run's runtime context (backend spec, progress transport, cancel source,
    env) does not change between steps; pickling and rebuilding it for each step
    cost about 0.2 ms a step. The actor keeps the one it was sent first and binds
    it to each step, with a fresh progress reporter on the same transport.
    """

    step: str | None
    attempt: int
    run_attempt: int


class ActorCopy:
    """The driver's record of what a reused actor holds from its earlier steps:
    the run's runtime context and the ``step_results`` it was sent."""

    def __init__(self) -> None:
        self._actor: Any = None
        self._sent: list[Any] = []

    def results_for(self, actor: Any, results: list[Any]) -> list[Any] | ResultsTail:
        """What to send ``actor``: the new results, when it holds every earlier one as they are."""
        sent = self._sent
        if actor is not self._actor or len(sent) > len(results):
            return results
        if any(a is not b for a, b in zip(sent, results[: len(sent)], strict=True)):
            return results  # an earlier result was replaced: send them all
        return ResultsTail(len(sent), results[len(sent) :])

    def runtime_for(self, actor: Any, runtime: Any) -> Any:
        """The runtime context itself for a new actor; the step's bindings for one that holds it."""
        if actor is not self._actor:
            return runtime
        return KeptRuntime(runtime.step, runtime.attempt, runtime.run_attempt)

    @contextmanager
    def shipping(self, actor: Any, ctx: Any) -> Iterator[None]:
        """``ctx`` with what ``actor`` holds already replaced by stand-ins, while a call
        serializes it; put back afterwards, whatever happens."""
        runtime, results = ctx.runtime_ctx, ctx.step_results
        ctx.runtime_ctx = self.runtime_for(actor, runtime)
        ctx.step_results = self.results_for(actor, results)
        try:
            yield
        finally:
            ctx.runtime_ctx, ctx.step_results = runtime, results

    def landed(self, actor: Any, results: list[Any]) -> None:
        """``actor`` ran a step with ``results`` (and the runtime context): it keeps them."""
        self._actor, self._sent = actor, list(results)

    def reset(self) -> None:
        """After a failed call: the next one sends everything again."""
        self._actor, self._sent = None, []


# -- worker side -------------------------------------------------------------
def results_in(ctx: Any, kept: list[Any]) -> list[Any]:
    """Rebuild ``ctx.step_results`` from a ``ResultsTail`` and what this actor kept; the
    returned copy is what it keeps for the next step (the step may change its own)."""
    value = ctx.step_results
    if isinstance(value, ResultsTail):
        if value.start > len(kept):  # the driver's record and ours disagree: a bug, never a guess
            raise RuntimeError(
                f"step results out of step: the driver sent results from #{value.start}, "
                f"this actor holds {len(kept)}"
            )
        value = ctx.step_results = kept[: value.start] + value.items
    return list(value)


def runtime_in(ctx: Any, kept: Any) -> Any:
    """Put the kept runtime context, bound to this step, in place of a ``KeptRuntime``;
    returns the runtime context to keep."""
    value = ctx.runtime_ctx
    if not isinstance(value, KeptRuntime):
        return value
    if kept is None:  # the driver's record and ours disagree: a bug, never a guess
        raise RuntimeError("runtime context out of step: the driver sent none, and this actor holds none")
    kept.progress = ProgressReporter(kept.progress.sink, kept.progress.interval)
    kept.bind_step(value.step, value.attempt)
    kept.progress.step, kept.progress.attempt = value.step, value.attempt
    kept.run_attempt = value.run_attempt
    ctx.runtime_ctx = kept
    return kept
