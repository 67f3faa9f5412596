"""The values of a ``map_shards`` fan-out, shared by the mapper and every runner,
and what ``fn`` sees while it runs (``ShardContext``). No Ray import here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from synapse_ray.errors import ShardFailure
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.env import applied_env
from synapse_ray.runtime.reporter import ProgressReporter


@dataclass(frozen=True)
class ShardOptions:
    """Resources each shard (task or pool actor) asks for."""

    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] | None = None

    def to_ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


@dataclass
class ShardBase:
    """What every shard of one fan-out shares; travels once per worker, not per shard."""

    map_id: str
    category: str
    step: str | None
    attempt: int
    run_attempt: int
    sink: Any
    cancel: CancelToken
    env: dict[str, str]
    wants_ctx: bool


@dataclass
class ShardJob:
    """What a runner needs to open a session for one fan-out."""

    fn: Any  # a callable, or a class whose instances are callables (one per worker)
    base: ShardBase
    options: ShardOptions
    what: str  # names the fan-out in messages


@dataclass
class ShardTask:
    index: int
    shard: Any
    attempt: int = 1
    crashes: int = 0


@dataclass
class ShardDone:
    """A finished attempt: ``handle`` gives the value (via ``fetch``), or ``error`` says why not."""

    task: ShardTask
    handle: Any = None
    error: BaseException | None = None
    crashed: bool = False  # the worker died: retried on the crash budget, not the RetryPolicy


class ShardSession(Protocol):
    """One fan-out on one runner. ``capacity`` is the default in-flight bound;
    ``bounded_wait`` says that ``wait`` returns within its timeout (a runner that
    runs a shard inside ``wait`` cannot promise it)."""

    capacity: int
    crash_retries: int
    bounded_wait: bool

    def submit(self, task: ShardTask) -> None: ...

    def wait(self, timeout: float) -> list[ShardDone]: ...

    def fetch(self, handle: Any) -> Any: ...

    def cancel(self) -> int:
        """Stop every submitted shard; how many were not finished (running or queued).

        It may block (Ray gives running shards a grace period to stop). The mapper has
        already counted and reported these shards as cancelled before calling it, so a
        step killed during that wait still leaves counts that add up.
        """

    def close(self) -> None: ...


class ShardRunner(Protocol):
    """Where shards run; a value that travels inside the ``RuntimeContext``."""

    def open(self, job: ShardJob) -> ShardSession: ...


class ShardResult(NamedTuple):
    """One shard's value, with the shard's position in the input."""

    index: int
    value: Any


class ShardResults(list[Any]):
    """The values of ``map_shards``; ``failures`` lists shards tolerated by ``allow_failures``."""

    failures: list[ShardFailure]


# -- what fn sees -------------------------------------------------------------------
class ShardContext:
    """The second argument of ``fn(shard, ctx)``: the shard's index and attempt, its own
    progress (``set_progress``) and the run's cancel flag."""

    def __init__(self, base: ShardBase, index: int, attempt: int) -> None:
        self.index = index
        self.attempt = attempt
        self._base = base
        self._reporter: ProgressReporter | None = None

    @property
    def cancelled(self) -> bool:
        return self._base.cancel.cancelled

    def raise_if_cancelled(self) -> None:
        self._base.cancel.raise_if_cancelled()

    def set_progress(self, current: float, total: float, category: str | None = None) -> None:
        """This shard's own progress; it counts toward the fan-out's category (``category`` is ignored)."""
        if total <= 0:
            return
        reporter = self._reporter
        if reporter is None:
            reporter = self._reporter = ProgressReporter(self._base.sink)
            reporter.step, reporter.attempt = self._base.step, self._base.attempt
            reporter.run_attempt = self._base.run_attempt
        fraction = min(1.0, max(0.0, current / total))
        reporter.shard_event(
            self._base.category, {"map": self._base.map_id, "index": self.index, "f": fraction}
        )

    def finish(self) -> None:
        """The shard's last word, landed before its result is handed back (so ``done`` follows it)."""
        reporter = self._reporter
        if reporter is not None:
            reporter.shard_event(
                self._base.category, {"map": self._base.map_id, "index": self.index, "end": 1}
            )
            reporter.close()


def call_shard(fn: Callable[..., Any], base: ShardBase, shard: Any, index: int, attempt: int) -> Any:
    """Run one shard in whichever process holds it, with the run's env vars."""
    ctx = ShardContext(base, index, attempt) if base.wants_ctx else None
    try:
        with applied_env(base.env):
            return fn(shard, ctx) if ctx is not None else fn(shard)
    finally:
        if ctx is not None:
            ctx.finish()


def build_instance(cls: type, base: ShardBase) -> Any:
    """A class ``fn``: its ``__init__`` runs once per worker (say, to load a model)."""
    with applied_env(base.env):
        return cls()
