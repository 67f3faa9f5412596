"""Progress values: events, the frozen plan, and the snapshot users read.

These are plain values so they cross process boundaries unchanged: a
worker's reporter sends ``ProgressEvent`` batches, the aggregator folds them
into a ``ProgressState`` (see ``progress_state.py``) and hands out
``ProgressSnapshot`` copies.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from synapse_ray.errors import ConfigurationError
from synapse_ray.runtime.status import RunStatus, StepStatus

# Event kinds. Strings (not an Enum) keep events cheap to build and to pickle.
PROGRESS = "progress"
STEP = "step"
RUN = "run"
METRIC = "metric"
LOG = "log"
PLAN = "plan"
WARN = "warn"
SHARD = "shard"  # map_shards: a mapper's counts, or one running shard's own progress


@dataclass(slots=True, frozen=True)
class ProgressEvent:
    """One thing that happened, as sent from a worker to the aggregator."""

    kind: str
    step: str | None = None
    attempt: int = 1
    category: str | None = None
    current: float = 0.0
    total: float = 0.0
    status: str | None = None
    worker: str | None = None
    ts: float = field(default_factory=time.time)
    data: Mapping[str, Any] | None = None
    run_attempt: int = 1  # the whole run's try; a crashed Ray task is tried again as a new one

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Every batch crosses a process boundary. The generic state of a slotted
        # frozen dataclass pickles field by field in Python; positional
        # arguments halve the cost of a 100-event batch, both ways.
        return (ProgressEvent, _EVENT_ARGS(self))


_EVENT_ARGS = operator.attrgetter(*(f.name for f in fields(ProgressEvent)))


@dataclass(slots=True, frozen=True)
class PlanStep:
    """A step's place in the plan: its normalized weight (all sum to 1)."""

    name: str
    weight: float
    category_weights: Mapping[str, float] | None = None


@dataclass(slots=True, frozen=True)
class ProgressPlan:
    """The frozen list of steps a run will go through, with normalized weights.

    Frozen before the first step starts, so overall progress has one fixed
    denominator and can never jump backwards because a step appeared late.
    """

    steps: tuple[PlanStep, ...]

    @classmethod
    def from_weights(
        cls,
        weights: Iterable[tuple[str, float]],
        category_weights: Mapping[str, Mapping[str, float]] | None = None,
    ) -> ProgressPlan:
        items = list(weights)
        for name, weight in items:
            if not isinstance(weight, int | float) or math.isnan(weight) or weight < 0:
                raise ConfigurationError(
                    f"Step '{name}': progress_weight must be a number >= 0, got {weight!r}",
                    step=name,
                )
        total = sum(w for _, w in items)
        cats = category_weights or {}
        if total <= 0:
            # All-zero weights: every step counts the same.
            norm = [(n, 1.0 / len(items)) for n, _ in items] if items else []
        else:
            norm = [(n, w / total) for n, w in items]
        return cls(tuple(PlanStep(n, w, _normalize(cats.get(n))) for n, w in norm))

    @classmethod
    def single(cls, name: str, category_weights: Mapping[str, float] | None = None) -> ProgressPlan:
        """Plan for a simple action: one implicit step, optionally split by category."""
        return cls((PlanStep(name, 1.0, _normalize(category_weights)),))

    def to_data(self) -> dict[str, Any]:
        """Plain-data form carried inside a PLAN event."""
        return {
            "steps": [
                [s.name, s.weight, dict(s.category_weights) if s.category_weights else None]
                for s in self.steps
            ]
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ProgressPlan:
        return cls(tuple(PlanStep(n, float(w), c) for n, w, c in data["steps"]))


def _normalize(weights: Mapping[str, float] | None) -> Mapping[str, float] | None:
    if not weights:
        return None
    for key, value in weights.items():
        if not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(
                f"progress weight for category '{key}' must be a number >= 0, got {value!r}"
            )
    total = float(sum(weights.values()))
    if total <= 0:
        return None
    return {k: v / total for k, v in weights.items()}


# The snapshot models below build their validators on first use (``defer_build``):
# every Ray worker and step actor imports this module for the events above, and
# never builds a snapshot; building four validators at import cost each fresh
# process about 7 ms here (import self time 16-23 ms, 11 ms deferred).


class StepProgress(BaseModel):
    """One step as shown to users."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    percent: float = 0.0
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    weight: float = 0.0
    error: str | None = None


class CategoryProgress(BaseModel):
    """Latest ``current/total`` reported for one progress category."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    current: float = 0.0
    total: float = 0.0

    @property
    def percent(self) -> float:
        return 100.0 * self.current / self.total if self.total > 0 else 0.0


class ShardCounts(BaseModel):
    """Where a ``map_shards`` fan-out stands, under its progress category.

    ``total`` is ``None`` while the shards come from an iterable of unknown
    length that is not exhausted yet.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    step: str | None = None
    total: int | None = None
    submitted: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    percent: float = 0.0


class ProgressSnapshot(BaseModel):
    """A point-in-time copy of a run's progress; safe to keep, print or send."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    run_id: str = ""
    status: RunStatus = RunStatus.PENDING
    overall: float = Field(0.0, ge=0.0, le=100.0)
    current_step: str | None = None
    steps: dict[str, StepProgress] = Field(default_factory=dict)
    categories: dict[str, CategoryProgress] = Field(default_factory=dict)
    shards: dict[str, ShardCounts] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    workers: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None
    run_attempt: int = 1
    version: int = 0
    updated_at: float = 0.0
