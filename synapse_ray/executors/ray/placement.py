"""The actor-per-step placement: each step executes in its own Ray actor.

The orchestrator (on the driver) keeps every step semantic; this only ships
the step and its context to an actor created with the step's resources, and
brings the result and the step's context changes back; large values stay in
Ray's object store and the driver holds references (``values.py``). Actors
stay alive until the run ends when a rollback may still need them, and all
are killed at close.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from synapse_ray.errors import ContextPicklingError, RunCancelledError, WorkerCrashedError
from synapse_ray.executors.ray.errors import map_ray_errors
from synapse_ray.executors.ray.kept import ActorCopy
from synapse_ray.executors.ray.remote import absorb_failed, remote_step_worker
from synapse_ray.executors.ray.resources import ResourceView
from synapse_ray.executors.ray.values import DEFAULT_STORE_THRESHOLD, store_errors, store_large, stored_in
from synapse_ray.steps.changes import ContextChanges
from synapse_ray.steps.context import check_picklable
from synapse_ray.steps.step import BaseStep, StepResult

ROLLBACK_TIMEOUT = 600.0  # a rollback that hangs must not keep a cancelled run open forever


def has_rollback(step: BaseStep[Any]) -> bool:
    return type(step).rollback is not BaseStep.rollback


class RayActorPlacement:
    def __init__(
        self,
        default_options: dict[str, Any] | None = None,
        reuse: bool = True,
        resources: ResourceView | None = None,
        crash_retries: int = 0,
        store_threshold: float = DEFAULT_STORE_THRESHOLD,
    ) -> None:
        self.default_options = dict(default_options or {})
        self.store_threshold = store_threshold
        self.crash_retries = crash_retries
        self._validated = False
        self._shipped = False
        self.reuse = reuse
        self.resources = resources or ResourceView()
        self._lock = threading.Lock()
        self._actors: list[Any] = []
        self._by_step: dict[str, Any] = {}
        self._owners: list[Any] = []  # actors owning data the context holds (a materialized dataset)
        self._last: tuple[str, Any] | None = None
        self._running: Any = None
        self._closed = False
        self._held = ActorCopy()  # what the reused actor holds from earlier steps

    # -- options ---------------------------------------------------------
    def options_for(self, step: BaseStep[Any]) -> dict[str, Any]:
        opts = dict(self.default_options)
        if step.resources is not None:
            opts.update(step.resources.to_ray_options())
        return opts

    def validate(self, steps: list[BaseStep[Any]], ctx: Any) -> None:
        """Every bad-input check, before any actor starts."""
        from ray import cloudpickle

        for step in steps:
            self.resources.check(f"Step '{step.name}'", self.options_for(step))
            try:
                cloudpickle.dumps(step)
            except Exception as exc:  # noqa: BLE001
                raise ContextPicklingError(
                    f"Step '{step.name}' ({type(step).__name__}) cannot be pickled to send it to its "
                    f"actor: {exc}. Keep live objects out of step instances; build them in execute().",
                    step=step.name,
                ) from None
        if steps:
            store_large(ctx, steps[0].name, self.store_threshold)  # names an unpicklable attribute
        self._validated = True

    def prepare(self, steps: list[BaseStep[Any]], ctx: Any) -> None:
        if not self._validated:
            self.validate(steps, ctx)

    # -- actors ------------------------------------------------------------
    def _actor_for(self, step: BaseStep[Any]) -> Any:

        opts = self.options_for(step)
        key = json.dumps(opts, sort_keys=True, default=str)
        with self._lock:
            if self._closed:
                raise RunCancelledError("run is closing; no new step actors", step=step.name)
            if self.reuse and self._last is not None and self._last[0] == key:
                return self._last[1]
            if self._last is not None:
                self._release_if_unneeded(self._last[1])
            actor = (
                remote_step_worker()
                .options(max_restarts=0, max_concurrency=1, **opts)
                .remote(self.store_threshold)
            )
            self._actors.append(actor)
            self._last = (key, actor)
            return actor

    def _release_if_unneeded(self, actor: Any) -> None:
        """Kill an actor as soon as no rollback, and no later step reading data it owns,
        can need it: frees its resources. The others go when the run ends."""
        import ray

        if any(a is actor for a in (*self._by_step.values(), *self._owners)):
            return
        ray.kill(actor, no_restart=True)

    def run_step(self, step: BaseStep[Any], ctx: Any, attempt: int) -> tuple[Any, Any]:
        import ray

        # The first step waits until the plan has landed, so none of its progress
        # arrives before the aggregator knows the step. Later steps' "running"
        # leaves with the sender's next batch (within 100 ms) or the step's end.
        if not self._shipped:
            ctx.runtime_ctx.progress.flush(wait=True)
            self._shipped = True
        actor = self._actor_for(step)
        if has_rollback(step):
            self._by_step[step.name] = actor
        results = ctx.step_results  # what the actor holds once the call lands
        try:
            with self._held.shipping(actor, ctx):  # only what the actor lacks is serialized
                # one argument: Ray's per-argument serialization cost more than the tuple
                ref = actor.run_step.remote((step, ctx))  # ctx.attempt is this attempt
        except Exception:
            self._held.reset()
            check_picklable(ctx, step=step.name)  # names the attribute a step added, if that is it
            raise
        self._running = actor
        try:
            with map_ray_errors(f"Step '{step.name}' (attempt {attempt})", step=step.name, attempt=attempt):
                outcome, changes = ray.get(ref)
                self._take_stored(actor, step, changes)
            self._held.landed(actor, results)
            if outcome.keep_worker and not any(a is actor for a in self._owners):
                self._owners.append(actor)  # a later step reads blocks only this actor holds
            outcome.forward_progress(ctx.runtime_ctx.progress)
            return outcome.value, changes
        except BaseException as exc:
            self._held.reset()
            if isinstance(exc, WorkerCrashedError):
                self._forget(actor)
            absorb_failed(ctx.runtime_ctx.progress, exc)  # what the failed step reported
            raise
        finally:
            self._running = None

    def _take_stored(self, actor: Any, step: BaseStep[Any], changes: ContextChanges) -> None:
        """Have the step's large values stored as return values the driver owns (never fetched here)."""
        import ray

        stored = stored_in(changes)
        if not stored:
            return
        refs = actor.take.options(num_returns=len(stored) + 1).remote([s.slot for s in stored])
        names = ", ".join(s.slot for s in stored)
        with store_errors(step.name, names, sum(s.nbytes for s in stored)):
            ray.get(refs[-1])  # the sizes: returned once every payload is in the store
        for value, ref in zip(stored, refs[:-1], strict=True):
            value.ref = ref

    def rollback_step(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> Any:
        import ray

        if not has_rollback(step):
            return ctx
        actor = self._by_step.get(step.name)
        if actor is None:
            raise WorkerCrashedError(
                f"Cannot roll back step '{step.name}': the actor that ran it is gone", step=step.name
            )
        with map_ray_errors(f"Rollback of step '{step.name}'", step=step.name):
            return ray.get(actor.rollback.remote(step, ctx, result), timeout=ROLLBACK_TIMEOUT)

    def _forget(self, actor: Any) -> None:
        with self._lock:
            self._by_step = {k: a for k, a in self._by_step.items() if a is not actor}
            self._owners = [a for a in self._owners if a is not actor]
            if self._last is not None and self._last[1] is actor:
                self._last = None

    def kill_running(self) -> bool:
        """The cancel fallback: kill the actor of the running step."""
        import ray

        actor = self._running
        if actor is None:
            return False
        ray.kill(actor, no_restart=True)
        return True

    def close(self) -> None:
        import ray

        with self._lock:
            self._closed = True
            actors, self._actors = self._actors, []
            self._by_step.clear()
            self._owners.clear()
            self._last = None
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
