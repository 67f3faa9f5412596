"""The mapper: one ``map_shards`` fan-out, the same semantics on every runner.

Bounded submission, results in shard order or as completed, retries
(``RetryPolicy`` on a raise, the runner's crash budget on a dead worker),
failure aggregation, ``allow_failures``, cancel, and the counts progress
shows. A runner (``ShardSession``) only submits, waits, fetches and cancels.
"""

from __future__ import annotations

import functools
import heapq
import inspect
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from synapse_ray.errors import (
    ConfigurationError,
    RunCancelledError,
    ShardFailure,
    ShardsFailedError,
    ShardSourceError,
)
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.shards.model import (
    ShardBase,
    ShardDone,
    ShardJob,
    ShardOptions,
    ShardResult,
    ShardRunner,
    ShardTask,
)
from synapse_ray.steps.retry import NO_RETRY, RetryPolicy

DEFAULT_CATEGORY = "shards"
WAIT_SLICE = 0.25  # how often a waiting mapper looks at the cancel flag
# On a runner whose wait returns within WAIT_SLICE (Ray), the fan-out's counts go out at
# most this often (the closing ones at once). Each change wakes the step's reporter, whose
# next batch to the aggregator follows within 0.1 s: a batch per finished shard, 2 % of a
# 2-CPU machine in a 64-shard fan-out (sender and aggregator), where 4 a second show the
# same on a live display. A runner that runs a shard inside its wait (in-process) sends
# every change: held back, the counts could stay stale for a whole shard.
COUNTS_EVERY = 0.25
LISTED_FAILURES = 20  # failures named in an error message (all are kept in ``failures``)

# a retry waiting for its delay: (due, index, task, the error that asked for it); the error
# is kept so the shard can fail with it if the step fails first and the retry never runs
Delayed = tuple[float, int, ShardTask, BaseException]


class ShardStream(Iterator[ShardResult]):
    """One fan-out: every bad input is refused here, before any worker is asked for."""

    def __init__(
        self,
        runtime: RuntimeContext,
        runner: ShardRunner,
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
    ) -> None:
        wants_ctx = _check_fn(fn)
        self._items = _check_shards(shards)
        self.total: int | None = len(shards) if hasattr(shards, "__len__") else None  # type: ignore[arg-type]
        options = _check_options(num_cpus, num_gpus, resources)
        _check_policy(max_in_flight, retry, allow_failures, category)
        self.runtime = runtime
        self.retry = retry or NO_RETRY
        self.ordered = bool(ordered)
        self.allow_failures = allow_failures
        self.category = category or DEFAULT_CATEGORY
        step = runtime.progress.step
        self.what = f"map_shards({_name(fn)})" + (f" in step '{step}'" if step else "")
        base = ShardBase(
            map_id=uuid.uuid4().hex[:10],
            category=self.category,
            step=step,
            attempt=runtime.progress.attempt,
            run_attempt=runtime.progress.run_attempt,
            sink=runtime.progress.sink,
            cancel=runtime.cancel_token,
            env=dict(runtime.env),
            wants_ctx=wants_ctx,
        )
        self._session = runner.open(ShardJob(fn, base, options, self.what))  # pickling, resources
        self.map_id = base.map_id
        self.max_in_flight = max_in_flight or max(1, int(self._session.capacity))
        self._counts_every = COUNTS_EVERY if self._session.bounded_wait else 0.0
        self.failures: list[ShardFailure] = []
        self.counts = dict.fromkeys(("submitted", "done", "failed", "retried", "cancelled"), 0)
        self._sent: tuple[Any, ...] = ()
        self._sent_at = float("-inf")
        self._gen: Iterator[ShardResult] | None = None

    def __iter__(self) -> ShardStream:
        return self

    def __next__(self) -> ShardResult:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def close(self) -> None:
        """Stop early: running shards are cancelled, nothing more is submitted."""
        if self._gen is not None:
            self._gen.close()
        else:
            self._session.close()

    # -- the loop ---------------------------------------------------------------------
    def _run(self) -> Iterator[ShardResult]:
        session, rt, counts = self._session, self.runtime, self.counts
        limit = self.max_in_flight
        in_flight: dict[int, ShardTask] = {}
        delayed: list[Delayed] = []  # a heap: retries waiting for their delay
        ready: dict[int, Any] = {}  # ordered mode: finished, waiting for an earlier shard
        skipped: set[int] = set()  # ordered mode: failed indices not yet passed
        next_out = 0
        exhausted = doomed = False
        try:
            while True:
                if rt.cancelled:
                    self._cancelled(in_flight, delayed)
                # ordered: what waits for an earlier shard plus what may still land stays
                # within twice the bound (capping ``ready`` alone let it reach three times)
                while not (exhausted or doomed) and len(in_flight) < min(limit, 2 * limit - len(ready)):
                    try:
                        shard = next(self._items)
                    except StopIteration:
                        exhausted = True
                        self.total = counts["submitted"]
                        break
                    except Exception as exc:  # noqa: BLE001 - the caller's iterable broke
                        raise ShardSourceError(
                            f"{self.what}: the shards iterable raised {type(exc).__name__} after "
                            f"{counts['submitted']} shards: {exc}",
                            after=counts["submitted"],
                        ) from exc
                    task = ShardTask(counts["submitted"], shard)
                    counts["submitted"] += 1
                    in_flight[task.index] = task
                    session.submit(task)
                now = time.monotonic()
                while delayed and delayed[0][0] <= now:
                    session.submit(heapq.heappop(delayed)[2])
                self._report(len(in_flight))
                if not in_flight:
                    break
                timeout = WAIT_SLICE if not delayed else min(WAIT_SLICE, max(0.0, delayed[0][0] - now))
                if len(delayed) == len(in_flight):  # only retries waiting for their delay
                    rt.cancel_token.wait(timeout)
                    continue
                for done in session.wait(timeout):
                    task = done.task
                    if done.error is None:
                        del in_flight[task.index]
                        counts["done"] += 1
                        if self.ordered:
                            ready[task.index] = done.handle
                        else:
                            yield ShardResult(task.index, session.fetch(done.handle))
                        continue
                    error = done.error
                    delay = self._retry_delay(task, done, doomed)
                    if delay is not None:
                        counts["retried"] += 1
                        task.attempt += 1
                        if delay > 0:
                            heapq.heappush(delayed, (time.monotonic() + delay, task.index, task, error))
                        else:
                            session.submit(task)
                        continue
                    self._failed(task.index, error, in_flight, skipped)
                    doomed = doomed or counts["failed"] > self.allow_failures
                if doomed:
                    self._fail_delayed(delayed, in_flight, skipped)
                while self.ordered and (next_out in ready or next_out in skipped):
                    if next_out in skipped:
                        skipped.discard(next_out)
                    else:
                        yield ShardResult(next_out, session.fetch(ready.pop(next_out)))
                    next_out += 1
            self._report(0, closed=True)
            self._raise_or_warn()
        except BaseException:
            self._stop(in_flight, delayed)
            raise
        finally:
            session.close()

    def _retry_delay(self, task: ShardTask, done: ShardDone, doomed: bool) -> float | None:
        """Seconds before the next attempt, or None when this failure is final."""
        if doomed or self.runtime.cancelled or isinstance(done.error, RunCancelledError):
            return None
        if done.crashed:
            if task.crashes < self._session.crash_retries:
                task.crashes += 1
                return 0.0
            return None
        tries = task.attempt - task.crashes  # attempts that ran the code to a raise
        if done.error is not None and self.retry.should_retry(done.error, tries):
            return self.retry.delay_for(tries)
        return None

    def _failed(
        self, index: int, error: BaseException, in_flight: dict[int, ShardTask], skipped: set[int]
    ) -> None:
        """Shard ``index`` failed for good with ``error``."""
        del in_flight[index]
        self.counts["failed"] += 1
        self.failures.append(ShardFailure.from_exception(index, error))
        if self.ordered:
            skipped.add(index)

    def _fail_delayed(
        self,
        delayed: list[Delayed],
        in_flight: dict[int, ShardTask],
        skipped: set[int],
    ) -> None:
        """The step is failing: a retry waiting for its delay is not sent (that would be a
        new submission, and the error would wait for it); it fails with its last error."""
        for _, index, _, error in delayed:
            self._failed(index, error, in_flight, skipped)
        delayed.clear()

    def _stop(self, in_flight: dict[int, ShardTask], delayed: list[Delayed]) -> int:
        """Count every unfinished shard (running, queued in the runner, or waiting for a
        retry delay) as cancelled and report that, then stop them. The report goes first:
        stopping may block (Ray grants running shards a grace period), and the step may be
        killed meanwhile; the final counts must already add up."""
        stopped = len(in_flight)
        in_flight.clear()
        delayed.clear()
        self.counts["cancelled"] += stopped
        self._report(0, closed=True)
        if stopped and not sys.is_finalizing():  # at exit the runner is going away with it
            self._session.cancel()
        return stopped

    def _cancelled(self, in_flight: dict[int, ShardTask], delayed: list[Delayed]) -> None:
        stopped = self._stop(in_flight, delayed)
        c = self.counts
        raise RunCancelledError(
            f"{self.what} cancelled: {stopped} unfinished shards cancelled, {c['done']} done, "
            f"{c['submitted']} of {self.total if self.total is not None else '?'} submitted",
            step=self.runtime.progress.step,
        )

    def _raise_or_warn(self) -> None:
        failed = len(self.failures)
        if not failed:
            return
        self.failures.sort(key=lambda f: f.index)
        listed = "; ".join(str(f) for f in self.failures[:LISTED_FAILURES])
        more = f"; and {failed - LISTED_FAILURES} more" if failed > LISTED_FAILURES else ""
        total = self.total if self.total is not None else self.counts["submitted"]
        if failed <= self.allow_failures:
            self.runtime.logger.warning(
                "shards_failed_tolerated", what=self.what, failed=failed, shards=listed
            )
            return
        err = ShardsFailedError(
            f"{self.what}: {failed} of {total} shards failed (allow_failures={self.allow_failures}): "
            f"{listed}{more}",
            failures=list(self.failures),
        )
        raise err from self.failures[0].exception

    def _report(self, running: int, closed: bool = False) -> None:
        """The fan-out's counts, to the step's reporter (coalesced: cheap to call often)."""
        c = self.counts
        key = (running, closed, self.total, *c.values())
        if key == self._sent:
            return
        now = time.monotonic()
        if not closed and now - self._sent_at < self._counts_every:
            return  # the loop comes back within WAIT_SLICE and sends the newest
        self._sent, self._sent_at = key, now
        data = {
            "map": self.map_id,
            "counts": {**c, "running": running, "total": self.total},
            "closed": closed,
        }
        self.runtime.progress.shard_event(self.category, data)


# -- checks ---------------------------------------------------------------------------
def _name(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return _name(fn.func)
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _check_fn(fn: Any) -> bool:
    """A callable taking the shard, or the shard and a ``ShardContext``; True for the latter."""
    if not callable(fn):
        raise ConfigurationError(f"map_shards fn must be callable (a function or a class), got {fn!r}")
    if isinstance(fn, type) and not any("__call__" in vars(k) for k in fn.__mro__):
        raise ConfigurationError(
            f"map_shards fn is the class {_name(fn)}, whose instances are not callable: define "
            "__call__(self, shard) (built once per worker, then called for each shard)"
        )
    target = fn.__call__ if isinstance(fn, type) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: called with the shard only
        return False
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if isinstance(fn, type):
        params = params[1:]  # self
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        return False
    if not params:
        what = f"{_name(fn)}.__call__" if isinstance(fn, type) else _name(fn)
        raise ConfigurationError(f"map_shards fn {what} must take the shard as its first argument")
    required = [p for p in params if p.default is inspect.Parameter.empty]
    return len(required) >= 2 or (len(params) >= 2 and params[1].name in ("ctx", "context"))


def _check_shards(shards: Any) -> Iterator[Any]:
    if isinstance(shards, str | bytes):
        raise ConfigurationError(
            f"shards is a {type(shards).__name__}; pass a list, range or generator of shard values"
        )
    try:
        return iter(shards)
    except TypeError:
        raise ConfigurationError(
            f"shards must be iterable (a list, range or generator of shard values), got "
            f"{type(shards).__name__}"
        ) from None


def _check_policy(max_in_flight: Any, retry: Any, allow_failures: Any, category: Any) -> None:
    if max_in_flight is not None and (
        isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight <= 0
    ):
        raise ConfigurationError(f"max_in_flight must be an integer >= 1 (or None), got {max_in_flight!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy (or None), got {type(retry).__name__}")
    if isinstance(allow_failures, bool) or not isinstance(allow_failures, int) or allow_failures < 0:
        raise ConfigurationError(f"allow_failures must be an integer >= 0, got {allow_failures!r}")
    if category is not None and (not isinstance(category, str) or not category):
        raise ConfigurationError(f"category must be a non-empty string (or None), got {category!r}")


def _check_options(num_cpus: Any, num_gpus: Any, resources: Any) -> ShardOptions:
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f"map_shards {name} must be a number >= 0, got {value!r}")
    if resources is not None:
        if not isinstance(resources, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
            for k, v in resources.items()
        ):
            raise ConfigurationError(
                f"map_shards resources must map resource names to numbers >= 0, got {resources!r}"
            )
    return ShardOptions(num_cpus, num_gpus, dict(resources) if resources else None)
