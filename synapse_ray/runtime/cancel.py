"""Cooperative cancellation.

A sync Ray actor method is never interrupted and ``ray.cancel`` only lands
after a blocking call returns, so steps check a flag. The token is a value:
it pickles to its current state plus an optional remote source (the Ray
executor plugs in one that asks the run's aggregator) so a step running in
another process still sees the driver's cancel.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from synapse_ray.errors import RunCancelledError


class CancelSource(Protocol):
    """Somewhere else that can say "this run was cancelled"."""

    def is_cancelled(self) -> bool: ...


class CancelToken:
    """A run's cancel flag.

    ``source`` is where another process learns of a cancel (the Ray
    aggregator). The process that owns the run (the driver) is where cancel is
    requested, so its own flag is the truth there: with ``local=True`` it never
    asks the source (a round trip each time), and the copies it ships to
    workers do.
    """

    def __init__(self, source: CancelSource | None = None, local: bool = False) -> None:
        self._event = threading.Event()
        self.source = source
        self._ask = source is not None and not local
        self.reason: str | None = None

    def cancel(self, reason: str | None = None) -> None:
        self.reason = reason or self.reason or "cancelled"
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self._ask:
            try:
                if self.source.is_cancelled():
                    self.cancel("cancelled by driver")
                    return True
            except Exception:  # noqa: BLE001 - an unreachable source means "not known cancelled"
                return False
        return False

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise RunCancelledError(f"Run cancelled: {self.reason}", reason=self.reason)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (early) as soon as the run is cancelled.

        With a remote source the sleep is cut into short slices so a driver's
        cancel is seen in another process too, not only a local one.
        """
        if not self._ask:
            return self._event.wait(timeout) or self.cancelled
        deadline = time.monotonic() + timeout
        while True:
            if self.cancelled:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._event.wait(min(remaining, 0.25))

    def __getstate__(self) -> dict[str, Any]:
        return {"cancelled": self._event.is_set(), "source": self.source, "reason": self.reason}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"])  # type: ignore[misc]
        self.reason = state["reason"]
        if state["cancelled"]:
            self._event.set()
