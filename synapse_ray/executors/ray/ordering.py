"""Progress batches folded in the order their process sent them.

The aggregator is an async actor, and Ray runs an async actor's calls as they
arrive, not in the order they were sent. Measured with a bare async actor and
bursts of 100 numbered calls: calls queued while the actor started were run
out of order in 9 of 15 trials, and a burst from a new handle in another
process (a worker's first batches) in 15 of 15. A progress batch that lands
before the batch with the plan loses its step's progress until the next one.

So each process numbers the batches it sends for a run (``next_seq``; per
process, not per sink copy: a fan-out of 20,000 shard tasks in a few reused
worker processes stays a few senders) and the aggregator folds them in that
order (``InOrder``). A batch that arrives early waits for the ones before it,
at most ``gap_s``: a batch that never comes (its call failed, or the
aggregator restarted and lost it) must not hold the rest back for good.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from synapse_ray.runtime.progress import RUN, ProgressEvent
from synapse_ray.runtime.reporter import worker_id
from synapse_ray.runtime.status import RunStatus

GAP_S = 1.0
_KEEP_RUNS = 4096  # counters of this process's most recent runs; an older run restarts at 0
_FINAL = frozenset(s.value for s in RunStatus if s.is_terminal)

_lock = threading.Lock()
_pid = -1
_counters: OrderedDict[str, int] = OrderedDict()


def is_final(events: list[ProgressEvent]) -> bool:
    """Whether a batch carries its run's final status: the last word of its sender (the driver)."""
    return any(ev.kind == RUN and ev.status in _FINAL for ev in events)


def next_seq(run_id: str, last: bool = False) -> tuple[str, int]:
    """This process's sender id (its ``worker_id``) and the number of its next batch for ``run_id``.

    ``last``: this process sends nothing more for the run (its final status), so
    its counter goes at once; a driver holds no number for the runs it ran.
    """
    global _pid
    with _lock:
        if _pid != os.getpid():  # a forked child numbers its own batches from 0
            _pid = os.getpid()
            _counters.clear()
        seq = _counters.pop(run_id, 0)
        if not last:
            _counters[run_id] = seq + 1  # most recent last
            if len(_counters) > _KEEP_RUNS:
                _counters.popitem(last=False)
        return worker_id(), seq


Batch = list[Any]


class InOrder:
    """Per run and sender: the next number expected, and the batches that came early."""

    def __init__(self, gap_s: float = GAP_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.gap_s = gap_s
        self._clock = clock
        self._next: dict[tuple[str, str], int] = {}
        self._early: dict[tuple[str, str], dict[int, tuple[float, Batch]]] = {}

    def arrive(self, run_id: str, sender: str, seq: int, batch: Batch, last: bool = False) -> list[Batch]:
        """The batches to fold now, in order: none while this one waits for an earlier one.

        ``last``: the sender's final word (a run's final status). Its sender waited
        for everything it sent before to land, so nothing earlier is still coming:
        it never waits, and takes along whatever waits before it.
        """
        key = (run_id, sender)
        expected = self._next.get(key, 0)
        if seq < expected:
            return [batch]  # after a gap was given up on: as it comes
        if seq > expected and not last:
            self._early.setdefault(key, {})[seq] = (self._clock(), batch)
            return []
        early = self._early.pop(key, {})
        ready = [early[k][1] for k in sorted(early) if k < seq]
        self._early[key] = {k: v for k, v in early.items() if k > seq}
        return self._release(key, seq, [*ready, batch])

    def _release(self, key: tuple[str, str], expected: int, ready: list[Batch]) -> list[Batch]:
        early = self._early.get(key, {})
        expected += 1
        while expected in early:
            ready.append(early.pop(expected)[1])
            expected += 1
        if not early:
            self._early.pop(key, None)
        self._next[key] = expected
        return ready

    def overdue(self) -> list[tuple[str, list[Batch]]]:
        """Give up on gaps older than ``gap_s``: ``(run_id, batches)`` released in order."""
        now = self._clock()
        out: list[tuple[str, list[Batch]]] = []
        for key, early in list(self._early.items()):
            first = min(early)
            if now - early[first][0] < self.gap_s:
                continue
            batch = early.pop(first)[1]
            out.append((key[0], self._release(key, first, [batch])))
        return out

    def waiting(self) -> int:
        return sum(len(early) for early in self._early.values())

    def forget(self, run_id: str) -> None:
        for key in [k for k in self._next if k[0] == run_id]:
            del self._next[key]
        for key in [k for k in self._early if k[0] == run_id]:
            del self._early[key]
