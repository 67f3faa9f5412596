"""Daemon threads that carry runs to their end, kept a while for the next run.

Starting a thread costs the starter about 0.3 ms (it waits until the new
thread runs), which a short run would pay every time. A thread whose run
ended waits up to ``IDLE_S`` for the next run before it exits. They are
daemon threads, unlike a ``concurrent.futures`` pool's (joined at exit): a
script that ends while a run goes on is not held open by it, as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

IDLE_S = 10.0


class Runners:
    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work; one is claimed (under the lock) per put

    def start(self, work: Callable[[], None]) -> None:
        """Run ``work`` on an idle thread, or a new one. ``work`` handles its own errors."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._work.put(work)
                return
        threading.Thread(target=self._loop, args=(work,), name="synapse-ray-run", daemon=True).start()

    def idle(self) -> int:
        with self._lock:
            return self._idle

    def _loop(self, work: Callable[[], None]) -> None:
        while True:
            work()
            del work  # hold nothing of a finished run while waiting
            with self._lock:
                self._idle += 1
            try:
                work = self._work.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:  # a start() that claimed this thread has put its work by now
                    try:
                        work = self._work.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


RUNNERS = Runners()
