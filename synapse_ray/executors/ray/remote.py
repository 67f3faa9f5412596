"""What runs inside Ray workers: the action task and the per-step actor.

Both receive plain values (action class, validated params, a pickled
``RuntimeContext`` holding the backend spec and the progress transport) and
rebuild what they need. On success the last progress batch rides back with
the result (``Outcome``) and the driver forwards it ahead of the final status
(a run's handle reads wait for that once the run ended, so none sees a result
without the progress that led to it), and the worker saves a blocking round
trip to the aggregator. On failure the worker
flushes and waits itself (rare path, simplest ordering).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synapse_ray.executors.ray.data import owns_blocks
from synapse_ray.executors.ray.kept import results_in, runtime_in
from synapse_ray.executors.ray.transport import RaySink
from synapse_ray.executors.ray.values import DEFAULT_STORE_THRESHOLD, INLINE, collect, receive
from synapse_ray.runtime import pickling
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.logging import configure_logging_when_imported
from synapse_ray.runtime.pickling import Pickled
from synapse_ray.runtime.progress import ProgressEvent
from synapse_ray.steps.changes import ContextChanges
from synapse_ray.steps.placement import InProcessPlacement, execute_step, rollback_step
from synapse_ray.steps.step import BaseStep, StepResult


@dataclass
class Outcome:
    """A remote success: the value, the progress events not yet sent, and the
    refs of progress sends still in flight (the driver waits on them before it
    forwards the tail, so nothing lands after the final status). A task also
    returns ``sent``, what it did send (folded once it grows): the driver's copy
    takes it, so a run whose aggregator died still ends with its whole record."""

    value: Any
    tail: list[ProgressEvent]
    in_flight: list[Any]
    sent: list[ProgressEvent] = field(default_factory=list)
    keep_worker: bool = False  # the step left values whose data this process owns

    def forward_progress(self, reporter: Any, timeout: float = 10.0, wake: bool = True) -> None:
        if self.in_flight:
            import ray

            ray.wait(self.in_flight, num_returns=len(self.in_flight), timeout=timeout)
        absorb_sent(reporter, self.sent)
        reporter.forward(self.tail, wake=wake)


def absorb_sent(reporter: Any, sent: list[ProgressEvent]) -> None:
    """Fold what a task or step reported itself into the driver's copy of the run."""
    if sent and isinstance(reporter.sink, RaySink):
        reporter.sink.absorb(sent)


def _keep_copy(sink: Any) -> None:
    if isinstance(sink, RaySink):
        sink.keep_copy()


def _reported(sink: Any) -> list[ProgressEvent]:
    """What this process reported since ``_keep_copy`` (or the last step), for the driver."""
    return sink.take_sent() if isinstance(sink, RaySink) else []


def _configure_worker_logging() -> None:
    """Set up a worker process for our code: Ray's pickler for contexts, and logging.

    User code that logs with structlog gets our pipeline (stderr, redaction), not
    structlog's default (stdout, which the CLI reserves for the result), from the
    moment structlog is imported: importing it costs a fresh worker about 100 ms,
    so it is not imported here."""
    use_ray_pickler()
    configure_logging_when_imported()


def run_action(call: tuple[type, Any, RuntimeContext]) -> Outcome:
    """Build the action ``call = (cls, params, runtime)`` in this worker and run it, steps
    in-process. One argument: Ray serializes each argument on its own."""
    cls, params, runtime = call
    _configure_worker_logging()
    runtime.step_placement = InProcessPlacement()
    runtime.progress.flush_step_events = False  # the tail of Outcome carries them
    sink = runtime.progress.sink
    _keep_copy(sink)
    action = cls(params, runtime)
    try:
        value = action.run()
    except BaseException as exc:
        runtime.progress.close()
        _attach_sent(exc, _reported(sink))
        raise
    tail, in_flight = runtime.progress.detach()
    return Outcome(value, tail, in_flight, _reported(sink))


SENT_ATTR = "_synapse_ray_sent"  # on a failed task's exception: what the task sent


def _attach_sent(exc: BaseException, sent: list[ProgressEvent]) -> None:
    """A failed run's copy rides back on its exception (pickled with its ``__dict__``), so
    the driver's copy has the steps even when the aggregator that got them is lost."""
    if not sent or not isinstance(exc, Exception):
        return
    try:
        setattr(exc, SENT_ATTR, sent)
    except (AttributeError, TypeError):  # an exception type that takes no attributes
        pass


def absorb_failed(reporter: Any, exc: BaseException) -> None:
    """Fold the copy a failed task or step attached to its exception into the driver's copy,
    and take it off: it is not the user's."""
    sent = getattr(exc, SENT_ATTR, None)
    if sent is None:
        return
    try:
        delattr(exc, SENT_ATTR)
    except AttributeError:
        pass
    absorb_sent(reporter, list(sent))


class StepWorker:
    """One actor per step (or per run of steps with identical options).

    The context arrives whole (large values as references, resolved here);
    only the step's changes go back. Large changed values wait here until the
    driver ``take``s them, as return values it owns (see ``values.py``).
    ``rollback`` must run here, where ``execute`` ran: node-local files the
    step wrote are on this machine. A reused actor keeps the run's runtime
    context and the step results it was sent, and gets only each step's
    bindings and the new results (``KeptRuntime``, ``ResultsTail``).
    """

    def __init__(self, threshold: float = DEFAULT_STORE_THRESHOLD) -> None:
        self._pending: dict[str, Pickled] = {}
        self._results: list[Any] = []
        self._runtime: Any = None
        self._threshold = threshold  # fixed per run: one argument less to ship per step

    def run_step(self, call: tuple[BaseStep[Any], Any]) -> tuple[Outcome, ContextChanges]:
        """Run one attempt of the step in ``call = (step, ctx)`` (``ctx.attempt`` says which).

        One argument, not two: Ray serializes each argument on its own, and a
        second one cost a reused step about 0.15 ms more than the pair."""
        step, ctx = call
        _configure_worker_logging()
        self._pending = {}
        self._runtime = runtime_in(ctx, self._runtime)
        self._results = results_in(ctx, self._results)
        sink = ctx.runtime_ctx.progress.sink
        _keep_copy(sink)  # the step's logs and values, for the driver's copy of the run
        try:
            before = receive(ctx)
            result = execute_step(step, ctx)
            changes, self._pending = collect(ctx, before, step.name, self._threshold)
        except BaseException as exc:
            ctx.runtime_ctx.progress.close()
            _attach_sent(exc, _reported(sink))
            raise
        keep = any(owns_blocks(getattr(ctx, key, None)) for key in changes.values)
        tail, in_flight = ctx.runtime_ctx.progress.detach()
        return Outcome(result, tail, in_flight, _reported(sink), keep_worker=keep), changes

    def take(self, slots: list[str]) -> tuple[Any, ...]:
        """The large payloads of the last step, one return value each, then their sizes."""
        payloads = [self._pending.pop(slot) for slot in slots]
        self._pending = {}
        return (*payloads, [p.nbytes for p in payloads])

    def rollback(self, step: BaseStep[Any], ctx: Any, result: StepResult) -> ContextChanges:
        try:
            before = receive(ctx)
            rollback_step(step, ctx, result)
            changes, _ = collect(ctx, before, step.name, INLINE)
        finally:
            ctx.runtime_ctx.progress.close()
        return changes


def use_ray_pickler() -> None:
    """Contexts pickle with Ray's cloudpickle (file-target classes travel by value)."""
    from ray import cloudpickle

    pickling.use_dumps(cloudpickle.dumps, cloudpickle.CloudPickler)


_remote: dict[str, Any] = {}


def remote_run_action() -> Any:
    """``run_action`` as a Ray remote function, made once per process.

    Each ``ray.remote(...)`` call exports a new function to the cluster; doing
    it per run grew the GCS by one entry per run and cost about 1.3 ms each.
    """
    if "task" not in _remote:
        import ray

        _remote["task"] = ray.remote(run_action)
    return _remote["task"]


def remote_step_worker() -> Any:
    """The ``StepWorker`` actor class, exported once per process (about 15 ms each time)."""
    if "actor" not in _remote:
        import ray

        _remote["actor"] = ray.remote(StepWorker)
    return _remote["actor"]
