"""The Ray shard runner: each shard a Ray task, or a call on a pool actor when ``fn`` is a class.

The mapper (``shards/stream.py``) keeps every semantic; this only places
work. Submission is bounded by the mapper; completion is found with
``ray.wait``. Each shard task has two returns: a tiny status the mapper waits
on and gets (to learn success, a raise or a dead worker) and the value, which
stays in the object store until the caller takes it, so the mapper never holds
results it has not handed out. The function (and what every shard shares) is
put in the object store once per fan-out and loaded once per worker process.

The runner is a value inside the ``RuntimeContext``: the Ray executors set it
and it travels to the step's task or actor, which is where shards are
submitted from.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from synapse_ray.errors import ConfigurationError, WorkerCrashedError
from synapse_ray.executors.ray.errors import map_ray_errors
from synapse_ray.executors.ray.resources import ResourceView, held_by_caller, needs_of
from synapse_ray.shards.model import ShardBase, ShardDone, ShardJob, ShardTask, build_instance, call_shard

MAX_DEFAULT_IN_FLIGHT = 10_000
CANCEL_GRACE = 2.0  # running shards get this long to stop on a KeyboardInterrupt before a kill
_LOADED_MAX = 8

_loaded: OrderedDict[str, tuple[Any, ShardBase]] = OrderedDict()
_remote: dict[str, Any] = {}


def default_in_flight(nodes: list[dict[str, float]], need: dict[str, float]) -> int:
    """How many shards ``nodes`` can run at once with ``need`` each (at least 1).

    ``nodes`` should already leave out what the submitting step keeps while it waits
    (``ResourceView.nodes(held)``), or the bound counts slots no shard can ever take."""
    positive = {k: v for k, v in need.items() if v > 0}
    if not positive:  # a shard asks for nothing: as many as there are CPUs
        positive = {"CPU": 1.0}
    slots = min(int(sum(node.get(k, 0.0) for node in nodes) // v) for k, v in positive.items())
    return max(1, min(MAX_DEFAULT_IN_FLIGHT, slots))


@dataclass
class RayShardRunner:
    """Runs shards on the Ray cluster; a dead worker is retried ``crash_retries`` times."""

    crash_retries: int = 3

    def open(self, job: ShardJob) -> RayShardSession:
        return RayShardSession(job, self.crash_retries)


class RayShardSession:
    """One fan-out on Ray. ``capacity``: twice the shards that fit at once for tasks (a
    queued task keeps each worker busy between completions); one per fitting actor."""

    bounded_wait = True  # ``ray.wait`` with the mapper's timeout

    def __init__(self, job: ShardJob, crash_retries: int) -> None:
        import ray

        self.job = job
        self.crash_retries = crash_retries
        options = job.options.to_ray_options()
        view = ResourceView()
        view.check(f"{job.what}: each shard", options)  # a request no node has fails now, not hangs
        # the step submitting shards keeps its GPUs and custom resources (an actor step: all it
        # holds) while it waits for them: shards can use only what is left beside it
        held = held_by_caller()
        view.check_held(f"{job.what}: each shard", options, held)
        slots = default_in_flight(view.nodes(held), needs_of(options))
        self._actor_mode = isinstance(job.fn, type)
        self.capacity = slots if self._actor_mode else min(MAX_DEFAULT_IN_FLIGHT, 2 * slots)
        self._box = [ray.put(_dumps(job))]  # in a list: workers load it themselves, once each
        self._running: dict[Any, tuple[ShardTask, Any, Any]] = {}  # status ref -> task, value ref, actor
        if self._actor_mode:
            self._pool_max = slots
            self._actor_cls = _remote_actor().options(max_restarts=0, max_concurrency=1, **options)
            self._actors: list[Any] = []
            self._idle: list[Any] = []
            self._starting: dict[Any, Any] = {}  # ready ref -> actor
            self._queue: deque[ShardTask] = deque()
            self._init_error: BaseException | None = None
        else:
            self._task = _remote_task().options(
                num_returns=2, max_retries=0, retry_exceptions=False, **options
            )

    # -- submit ------------------------------------------------------------------------
    def submit(self, task: ShardTask) -> None:
        if not self._actor_mode:
            status, value = self._task.remote(self._box, task.shard, task.index, task.attempt)
            self._running[status] = (task, value, None)
            return
        self._queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            actor = self._idle.pop()
            task = self._queue.popleft()
            status, value = actor.run.options(num_returns=2).remote(task.shard, task.index, task.attempt)
            self._running[status] = (task, value, actor)
        while len(self._queue) > len(self._starting) and len(self._actors) < self._pool_max:
            actor = self._actor_cls.remote(self._box)
            self._actors.append(actor)
            self._starting[actor.ready.remote()] = actor

    # -- wait --------------------------------------------------------------------------
    def wait(self, timeout: float) -> list[ShardDone]:
        import ray

        refs = [*self._running, *(self._starting if self._actor_mode else ())]
        if not refs:
            return self._unplaceable(timeout)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out: list[ShardDone] = []
        for ref in ready:
            if self._actor_mode and ref in self._starting:
                failed = self._started(ref)
                if failed is not None:
                    out.append(failed)
                continue
            task, value, actor = self._running.pop(ref)
            try:
                with map_ray_errors(f"{self.job.what}: shard {task.index} (attempt {task.attempt})"):
                    ray.get(ref)
            except WorkerCrashedError as exc:
                self._drop(actor)
                out.append(ShardDone(task, error=exc, crashed=True))
                continue
            except Exception as exc:  # noqa: BLE001 - the shard's own exception, original type
                out.append(ShardDone(task, error=exc))
            else:
                out.append(ShardDone(task, handle=value))
            if actor is not None:
                self._idle.append(actor)
        if self._actor_mode:
            self._dispatch()
        return out

    def _started(self, ref: Any) -> ShardDone | None:
        """A pool actor is up, or failed to start: then one queued shard gets its error.

        Failing one shard per failed start (instead of starting another actor for the
        same queue) bounds the attempts: a class whose ``__init__`` always raises fails
        its shards per their ``RetryPolicy``, it does not loop.
        """
        import ray
        from ray.exceptions import RayActorError

        actor = self._starting.pop(ref)
        try:
            with map_ray_errors(f"{self.job.what}: starting a pool actor"):
                ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - __init__ raised or the actor died
            self._drop(actor)
            cause = exc.__cause__
            init_failed = isinstance(cause, RayActorError) and cause.actor_init_failed
            error = _init_error(self.job, cause) if init_failed else exc
            self._init_error = error
            if self._queue:
                return ShardDone(self._queue.popleft(), error=error, crashed=not init_failed)
            return None
        self._idle.append(actor)
        return None

    def _unplaceable(self, timeout: float) -> list[ShardDone]:
        """Actor mode, nothing running or starting: every pool actor failed to start."""
        if not (self._actor_mode and self._queue):
            self.job.base.cancel.wait(timeout)
            return []
        error = self._init_error or WorkerCrashedError(f"{self.job.what}: no pool actor could start")
        tasks, self._queue = list(self._queue), deque()
        return [ShardDone(task, error=error) for task in tasks]

    def _drop(self, actor: Any) -> None:
        import ray

        if actor is None:
            return
        self._actors = [a for a in self._actors if a is not actor]
        self._idle = [a for a in self._idle if a is not actor]
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def fetch(self, handle: Any) -> Any:
        import ray

        with map_ray_errors(f"{self.job.what}: fetching a result"):
            return ray.get(handle)

    # -- stop --------------------------------------------------------------------------
    def cancel(self) -> int:
        """Stop every submitted shard: an interrupt first, a kill for what ignores it.

        This waits up to ``CANCEL_GRACE``; the mapper reports the shards as cancelled
        before calling it, since the step may be killed during the wait (a run's cancel
        grace can be shorter)."""
        import ray

        running = len(self._running) + (len(self._queue) if self._actor_mode else 0)
        refs = list(self._running)
        self._running.clear()
        if self._actor_mode:
            self._queue.clear()
            self._kill_actors()
            return running
        for ref in refs:
            _quietly(ray.cancel, ref, force=False)
        if refs:
            _, stuck = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE)
            for ref in stuck:
                _quietly(ray.cancel, ref, force=True)
        return running

    def close(self) -> None:
        self._running.clear()
        if self._actor_mode:
            self._kill_actors()
        self._box = []

    def _kill_actors(self) -> None:
        import ray

        actors, self._actors, self._idle, self._starting = self._actors, [], [], {}
        for actor in actors:
            _quietly(ray.kill, actor, no_restart=True)


def _init_error(job: ShardJob, ray_error: BaseException) -> RuntimeError:
    """The user's ``__init__`` raised on a worker: say so with its last line, Ray's error chained."""
    lines = [line.strip() for line in str(ray_error).splitlines() if line.strip()]
    name = getattr(job.fn, "__qualname__", repr(job.fn))
    err = RuntimeError(f"{name}.__init__ raised on a worker: {lines[-1] if lines else ray_error}")
    err.__cause__ = ray_error
    return err


def _quietly(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except Exception:  # noqa: BLE001 - it finished or is gone already
        pass


def _dumps(job: ShardJob) -> bytes:
    """Pickle ``fn`` and the shared values once; an ``fn`` that cannot travel is named."""
    from ray import cloudpickle

    try:
        return cloudpickle.dumps((job.fn, job.base))
    except Exception as exc:  # noqa: BLE001
        raise ConfigurationError(
            f"{job.what}: fn {getattr(job.fn, '__qualname__', job.fn)!r} cannot be pickled to send it to "
            f"Ray workers: {type(exc).__name__}: {exc}. Build live objects (clients, locks, open files) "
            "inside fn, or pass a class: its __init__ runs once on each worker.",
            fn=getattr(job.fn, "__qualname__", repr(job.fn)),
        ) from None


def _load(box: list[Any]) -> tuple[Any, ShardBase]:
    """The fan-out's fn and shared values, loaded once per worker process."""
    key = box[0].hex()
    hit = _loaded.get(key)
    if hit is None:
        import ray
        from ray import cloudpickle

        hit = _loaded[key] = cloudpickle.loads(ray.get(box[0]))
        while len(_loaded) > _LOADED_MAX:
            _loaded.popitem(last=False)
    else:
        _loaded.move_to_end(key)
    return hit


def run_shard(box: list[Any], shard: Any, index: int, attempt: int) -> tuple[None, Any]:
    """One shard as a Ray task: ``(status, value)``, two returns."""
    from synapse_ray.executors.ray.remote import _configure_worker_logging

    _configure_worker_logging()
    fn, base = _load(box)
    return None, call_shard(fn, base, shard, index, attempt)


class ShardActor:
    """A pool actor: builds the class ``fn`` once, then runs one shard per call."""

    def __init__(self, box: list[Any]) -> None:
        from synapse_ray.executors.ray.remote import _configure_worker_logging

        _configure_worker_logging()
        cls, self.base = _load(box)
        self.instance = build_instance(cls, self.base)

    def ready(self) -> bool:
        return True

    def run(self, shard: Any, index: int, attempt: int) -> tuple[None, Any]:
        return None, call_shard(self.instance, self.base, shard, index, attempt)


def _remote_task() -> Any:
    """``run_shard`` as a Ray remote function, exported once per process."""
    if "task" not in _remote:
        import ray

        _remote["task"] = ray.remote(run_shard)
    return _remote["task"]


def _remote_actor() -> Any:
    if "actor" not in _remote:
        import ray

        _remote["actor"] = ray.remote(ShardActor)
    return _remote["actor"]
