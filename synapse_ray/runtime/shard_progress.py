"""Folding ``map_shards`` progress: the mapper's counts plus each running shard's own fraction.

Two kinds of ``SHARD`` event feed one ``ShardTally`` per progress category:

- the mapper (the step that called ``map_shards``) sends absolute counts
  (submitted, done, running, failed, retried, cancelled, total), coalesced;
- a running shard that calls ``ctx.set_progress`` sends its own fraction, and
  an ``end`` marker when it finishes (before its result is handed back, so
  the mapper's ``done`` never lands before the shard's last word).

The category's value is the shard-weighted sum: finished shards count 1 each,
running shards their reported fraction. Memory is bounded by the shards in
flight (only running shards have an entry), never by the number of shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNT_KEYS = ("submitted", "done", "running", "failed", "retried", "cancelled")
MAX_PARTIALS = 10_000  # more shards than this in flight at once: the rest count only when done


class ShardTally:
    """One fan-out's counts and its running shards' fractions."""

    def __init__(self, map_id: str | None, step: str | None, attempt: int) -> None:
        self.map_id = map_id
        self.step = step
        self.attempt = attempt
        self.total: int | None = None
        self.counts: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)
        self.partial: dict[int, float] = {}
        self.closed = False

    def apply(self, data: Mapping[str, Any]) -> None:
        counts = data.get("counts")
        if counts is not None:
            total = counts.get("total")
            self.total = int(total) if total is not None else None
            for key in COUNT_KEYS:
                self.counts[key] = int(counts.get(key, 0))
            if data.get("closed"):
                self.closed = True
                self.partial.clear()
            return
        if self.closed or "index" not in data:
            return
        index = int(data["index"])
        if data.get("end"):
            self.partial.pop(index, None)
        elif index in self.partial or len(self.partial) < MAX_PARTIALS:
            self.partial[index] = min(1.0, max(0.0, float(data.get("f", 0.0))))

    def value(self) -> tuple[float, float]:
        """``(current, total)`` in shards; ``(0, 0)`` while the total is unknown."""
        if not self.total:
            return 0.0, 0.0
        finished = self.counts["done"] + self.counts["failed"]
        current = finished + (sum(self.partial.values()) if not self.closed else 0.0)
        return min(float(self.total), current), float(self.total)

    def percent(self) -> float:
        current, total = self.value()
        return round(100.0 * current / total, 4) if total > 0 else 0.0

    def counts_data(self) -> dict[str, Any]:
        """The counts as a ``SHARD`` event carries them (to rebuild this tally elsewhere)."""
        return {"map": self.map_id, "counts": {**self.counts, "total": self.total}, "closed": self.closed}
