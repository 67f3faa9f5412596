"""Sending a run's log entries to the backend (``POST logs/``), in batches.

Run by the single writer of the run (the in-process sink or the Ray
aggregator), next to the job record writer. ``offer`` only appends to a
bounded queue, so a training loop that logs never waits on the network; one
thread sends batches. When the queue is full the oldest entries are dropped,
counted, and reported (a warning, and a ``logs_dropped`` entry sent with the
last batch). Entries that carry a file go alone: each inlines its file.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from synapse_ray.runtime.logging import get_logger

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec

MAX_QUEUE = 2000
BATCH = 200
INTERVAL = 0.5


class JobLogBatcher:
    def __init__(
        self,
        backend: BackendSpec,
        job_id: int | str,
        max_queue: int = MAX_QUEUE,
        batch: int = BATCH,
        interval: float = INTERVAL,
    ) -> None:
        self.backend = backend
        self.job_id = job_id
        self.max_queue = max_queue
        self.batch = batch
        self.interval = interval
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._reported_drops = 0

    def offer(self, entries: list[dict[str, Any]]) -> None:
        """Queue entries (oldest dropped past the bound); never blocks on the network."""
        if not entries:
            return
        with self._cond:
            for entry in entries:
                item = dict(entry)
                if item.get("job") is None:
                    item["job"] = str(self.job_id)
                self._queue.append(item)
            overflow = len(self._queue) - self.max_queue
            for _ in range(max(0, overflow)):
                self._queue.popleft()
            self.dropped += max(0, overflow)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="synapse-ray-job-logs", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> bool:
        """Send what is queued, then stop; True when everything queued was handled in time."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is None:
            self._send_drop_report()
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _take(self) -> list[dict[str, Any]] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            if not self._closing and len(self._queue) < self.batch:
                self._cond.wait(self.interval)  # let a burst gather into one request
            if not self._queue:
                return [] if not self._closing else None
            if self._queue[0].get("file"):
                return [self._queue.popleft()]
            out: list[dict[str, Any]] = []
            while self._queue and len(out) < self.batch and not self._queue[0].get("file"):
                out.append(self._queue.popleft())
            return out

    def _loop(self) -> None:
        while True:
            entries = self._take()
            if entries is None:
                self._send_drop_report()
                return
            if entries:
                self._send(entries)

    def _send_drop_report(self) -> None:
        new = self.dropped - self._reported_drops
        if new <= 0:
            return
        self._reported_drops = self.dropped
        get_logger("synapse_ray.logs").warning("job_logs_dropped", job_id=self.job_id, dropped=new)
        self._send(
            [
                {
                    "event": "logs_dropped",
                    "data": {"dropped": new},
                    "job": str(self.job_id),
                    "level": "warning",
                    "datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ]
        )

    def _send(self, entries: list[dict[str, Any]]) -> None:
        from synapse_ray.backend.client import get_client

        try:
            get_client(self.backend).create_logs(entries)
            self.sent += len(entries)
        except Exception as exc:  # noqa: BLE001 - logs never fail a run
            self.failed += len(entries)
            get_logger("synapse_ray.logs").warning(
                "job_logs_send_failed",
                job_id=self.job_id,
                entries=len(entries),
                error=f"{type(exc).__name__}: {exc}",
            )
