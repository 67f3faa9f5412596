"""``map_shards``: scale the work of one step out over many workers.

A step hands a function and an iterable of shards; each shard runs as its own
unit of work, placed by a *shard runner* the executor injects into the
``RuntimeContext`` (``runtime.shard_runner``): in this process by default
(``LocalExecutor``), as Ray tasks (or an actor pool when ``fn`` is a class)
under the Ray executors (``executors/ray/shards.py``). The semantics are the
same for every runner and live in ``shards/stream.py``: bounded submission,
results in shard order or as completed, retries (``RetryPolicy`` on a raise, a
crash budget on a dead worker), failure aggregation, ``allow_failures``,
cancel, and the counts that progress shows. A runner only submits, waits,
fetches and cancels. This module is the public surface and the in-process runner.

Memory stays flat in the number of shards: shards are read lazily, at most
``max_in_flight`` are submitted at once, finished shards leave no trace but
counts (and, in ordered mode, a bounded window of results waiting for an
earlier shard). Ray results stay in the object store until they are handed
to the caller; the streaming form (``iter_shards``) never holds them all.

No Ray import here: ``steps/`` and ``runtime/`` stay Ray-free, and so does a
``LocalExecutor`` run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.shards.model import (
    ShardContext,
    ShardDone,
    ShardJob,
    ShardResult,
    ShardResults,
    ShardRunner,
    ShardTask,
    build_instance,
    call_shard,
)
from synapse_ray.shards.stream import ShardStream
from synapse_ray.steps.retry import RetryPolicy

__all__ = [
    "InProcessShardRunner",
    "ShardContext",
    "ShardResult",
    "ShardResults",
    "ShardRunner",
    "ShardStream",
    "iter_shards",
    "map_shards",
]


# -- the in-process runner ----------------------------------------------------------
class InProcessShardRunner:
    """Runs shards one after another in the calling thread (``LocalExecutor``, debugging)."""

    def open(self, job: ShardJob) -> InProcessSession:
        return InProcessSession(job)


class InProcessSession:
    capacity = 1
    crash_retries = 0  # a crash here is this process dying
    bounded_wait = False  # ``wait`` runs a shard

    def __init__(self, job: ShardJob) -> None:
        self.job = job
        self._queue: deque[ShardTask] = deque()
        self._fn: Any = None

    def submit(self, task: ShardTask) -> None:
        self._queue.append(task)

    def wait(self, timeout: float) -> list[ShardDone]:
        if not self._queue:
            self.job.base.cancel.wait(timeout)
            return []
        task = self._queue.popleft()
        try:
            if self._fn is None:
                fn = self.job.fn
                self._fn = build_instance(fn, self.job.base) if isinstance(fn, type) else fn
            value = call_shard(self._fn, self.job.base, task.shard, task.index, task.attempt)
        except Exception as exc:  # noqa: BLE001 - the mapper decides: retry, tolerate or fail
            return [ShardDone(task, error=exc)]
        return [ShardDone(task, handle=value)]

    def fetch(self, handle: Any) -> Any:
        return handle

    def cancel(self) -> int:
        """Drop the queued shards and say how many: nothing runs while the mapper is not in
        ``wait``, so every shard not yet done is queued and is stopped by being dropped."""
        stopped = len(self._queue)
        self._queue.clear()
        return stopped

    def close(self) -> None:
        self._queue.clear()
        self._fn = None


def map_shards(
    ctx: Any,
    fn: Callable[..., Any] | type,
    shards: Iterable[Any],
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    resources: dict[str, float] | None = None,
    max_in_flight: int | None = None,
    retry: RetryPolicy | None = None,
    ordered: bool = True,
    allow_failures: int = 0,
    category: str | None = None,
) -> ShardResults:
    """Run ``fn`` on every shard; return the values (shard order, or completion order).

    ``ctx`` is a step context or a ``RuntimeContext``. ``fn(shard)`` or
    ``fn(shard, ctx)`` (then ``ctx`` is a ``ShardContext``); a class is built
    once per worker and its instances are called. Failed shards are retried per
    ``retry`` and on a dead worker; past ``allow_failures`` failed shards, one
    ``ShardsFailedError`` lists them all.
    """
    stream = ShardStream(
        *_placement(ctx), fn, shards, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
        max_in_flight=max_in_flight, retry=retry, ordered=ordered, allow_failures=allow_failures,
        category=category,
    )  # fmt: skip
    results = ShardResults(item.value for item in stream)
    results.failures = stream.failures
    return results


def iter_shards(
    ctx: Any, fn: Callable[..., Any] | type, shards: Iterable[Any], **options: Any
) -> ShardStream:
    """The streaming form of ``map_shards``: yields ``ShardResult(index, value)`` as results
    are ready (in shard order unless ``ordered=False``), so no one holds all results."""
    return ShardStream(*_placement(ctx), fn, shards, **options)


def _placement(ctx: Any) -> tuple[RuntimeContext, ShardRunner]:
    """The run's context and the runner its executor injected (in-process when none)."""
    runtime = getattr(ctx, "runtime_ctx", ctx)
    if not isinstance(runtime, RuntimeContext):
        raise ConfigurationError(
            f"map_shards needs a step context or a RuntimeContext, got {type(ctx).__name__}"
        )
    return runtime, runtime.shard_runner or InProcessShardRunner()
