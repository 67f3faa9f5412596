"""The one progress sender thread of a process.

Reporters mark themselves dirty here; the sender wakes, waits out each
reporter's interval since its last send, and flushes it. Kept apart from the
reporter so each module stays small; the reporter is its only user.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from synapse_ray.runtime.logging import get_logger

if TYPE_CHECKING:
    from synapse_ray.runtime.reporter import ProgressReporter


def progress_log() -> Any:
    """The logger of the progress machinery (the sender and the reporters)."""
    return get_logger("synapse_ray.progress")


class Sender:
    """One daemon thread per process sends the batches of every reporter with news.

    It sleeps on a condition until some reporter is marked dirty, then sends
    that reporter's batch once its interval since the last send has passed.
    Only dirty reporters are held (strongly, until sent by the sender or by
    their own flush), so a finished run's reporter is free to go at once.
    Worker processes are reused across tasks, so a task pays no thread start;
    a thread that died (or a forked child without one) is started again on
    the next mark.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._dirty: dict[int, ProgressReporter] = {}
        self._thread: threading.Thread | None = None
        self._pid = -1

    def mark(self, reporter: ProgressReporter) -> None:
        if reporter._closed:
            return
        with self._cond:
            self._dirty[id(reporter)] = reporter
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                if _exiting():
                    return  # a thread started now never runs, and start() would wait for it forever
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="synapse-ray-progress", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, reporter: ProgressReporter) -> None:
        """Drop a reporter a caller flushed itself (its state is free to go at once)."""
        with self._cond:
            self._dirty.pop(id(reporter), None)

    def pending(self) -> int:
        with self._cond:
            return len(self._dirty)

    def _due(self) -> list[ProgressReporter]:
        """Wait until some dirty reporter's interval has passed; take those."""
        with self._cond:
            while True:
                if not self._dirty:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                wake = min(r.last_flush + r.interval for r in self._dirty.values())
                if wake > now:
                    self._cond.wait(wake - now)
                    continue
                due = [r for r in self._dirty.values() if r.last_flush + r.interval <= now]
                for r in due:
                    del self._dirty[id(r)]
                return due

    def _loop(self) -> None:
        while True:
            for reporter in self._due():
                try:
                    if not reporter._closed:
                        reporter.flush()
                except Exception as exc:  # noqa: BLE001 - one bad sink must not stop the others
                    progress_log().warning("progress_send_failed", error=repr(exc))
            reporter = None  # noqa: F841 - hold no reporter while asleep


def _exiting() -> bool:
    """The interpreter is shutting down: a stream or run closed by the final garbage
    collection (a script that stopped reading a fan-out and exited) may still report."""
    return sys.is_finalizing() or not threading.main_thread().is_alive()


SENDER = Sender()
