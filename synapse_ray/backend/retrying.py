"""One backoff policy for every retry in the backend package, and a cancel hook.

Request retries (:mod:`.client`), upload resume (:mod:`.upload`) and
download resume (:mod:`.download`) all count failures and wait through
:class:`Backoff`, so the budget, the cap, the deadline and cancellation behave
the same everywhere.

Cancellation: the runtime wraps a run in ``with cancel_scope(token):`` where
``token.wait(timeout) -> bool`` sleeps up to ``timeout`` seconds and returns
True early once the run is cancelled (``synapse_ray.runtime.cancel.CancelToken``
has exactly this method). Every backoff wait in this context then goes through
the token, so a cancel interrupts it at once instead of after up to 30 s (120 s
for a ``Retry-After``), and the wait raises :class:`RunCancelledError`
chained from the backend error that was being retried. The scope is a
``ContextVar``: it applies to the current thread (and asyncio task) only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from synapse_ray.errors import RunCancelledError

from .errors import BackendError

__all__ = ["MAX_BACKOFF", "Backoff", "Waiter", "backoff_delay", "cancel_scope", "current_waiter", "pause"]


def _log() -> Any:
    """The logger, imported on first use: a worker that only sets a cancel scope
    (every step does) should not pay for importing structlog."""
    import structlog

    return structlog.get_logger("synapse_ray.backend")


MAX_BACKOFF = 30.0  # the longest computed backoff wait, jitter included


class Waiter(Protocol):
    """Anything that can sleep and report a cancel (``CancelToken`` fits)."""

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True as soon as the run is cancelled."""
        ...


_waiter: ContextVar[Waiter | None] = ContextVar("synapse_ray_backend_waiter", default=None)


@contextmanager
def cancel_scope(waiter: Waiter) -> Iterator[Waiter]:
    """Make every backoff wait in this context interruptible through ``waiter``."""
    token = _waiter.set(waiter)
    try:
        yield waiter
    finally:
        _waiter.reset(token)


def current_waiter() -> Waiter | None:
    return _waiter.get()


def backoff_delay(base: float, attempt: int) -> float:
    """``base * 2**attempt`` with +-20% jitter (workers don't retry in lockstep),
    capped at :data:`MAX_BACKOFF` *after* the jitter, so the cap is the real maximum."""
    delay = base * (2 ** min(attempt, 32)) * random.uniform(0.8, 1.2)
    return min(MAX_BACKOFF, delay)


def pause(seconds: float, *, what: str, error: BaseException | None = None) -> None:
    """Wait ``seconds`` before retrying ``what``; :class:`RunCancelledError` if cancelled."""
    if seconds <= 0 and _waiter.get() is None:
        return
    waiter = _waiter.get()
    if waiter is None:
        time.sleep(seconds)
        return
    if waiter.wait(max(0.0, seconds)):
        reason = f" after {type(error).__name__}" if error is not None else ""
        raise RunCancelledError(f"Cancelled while waiting to retry {what}{reason}.", what=what) from error


class Backoff:
    """The failure budget of one logical operation.

    ``budget`` failures are retried (the next one is raised). ``deadline_s``
    bounds the whole operation: a wait that would end past it is not started,
    the last error is raised instead. Transfers call :meth:`progressed` after
    each piece that got through, which resets the count and the deadline.
    """

    def __init__(self, base: float, budget: int, *, what: str, deadline_s: float | None = None) -> None:
        self.base = base
        self.budget = budget
        self.what = what
        self.deadline_s = deadline_s
        self.failures = 0
        self._deadline = self._new_deadline()

    def _new_deadline(self) -> float | None:
        return None if self.deadline_s is None else time.monotonic() + self.deadline_s

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value by which the operation must end (None: no limit)."""
        return self._deadline

    def progressed(self) -> None:
        self.failures = 0
        self._deadline = self._new_deadline()

    def retry(
        self,
        error: BackendError,
        cause: BaseException | None = None,
        *,
        delay: float | None = None,
        event: str = "backend.retry",
        **log_fields: Any,
    ) -> None:
        """Count ``error``; wait before the next attempt, or raise it (``from cause``)."""
        self.failures += 1
        if self.failures > self.budget:
            raise error from cause
        wait = backoff_delay(self.base, self.failures - 1) if delay is None else delay
        if self._deadline is not None and time.monotonic() + wait > self._deadline:
            error.message = (
                f"{error.message} (gave up: retrying would pass the {self.deadline_s:g} s deadline)"
            )
            error.args = (error.message,)
            raise error from cause
        _log().warning(
            event,
            attempt=self.failures,
            of=self.budget,
            delay_s=round(wait, 3),
            reason=type(error).__name__,
            **log_fields,
        )
        pause(wait, what=self.what, error=error if cause is None else _chained(error, cause))


def _chained(error: BackendError, cause: BaseException) -> BackendError:
    error.__cause__ = cause
    return error
