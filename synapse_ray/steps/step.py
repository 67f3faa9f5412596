"""A step: one unit of a step-based workflow, plus its result value."""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from synapse_ray.steps.retry import RetryPolicy

C = TypeVar("C")


@dataclass
class StepResult:
    """What a step reports back. ``rollback_data`` is handed to its ``rollback``."""

    success: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rollback_data: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StepResources:
    """Ray resources one step needs; used when each step gets its own actor."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None
    resources: dict[str, float] | None = None

    def to_ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.num_cpus is not None:
            opts["num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            opts["num_gpus"] = self.num_gpus
        if self.memory is not None:
            opts["memory"] = self.memory
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class BaseStep(ABC, Generic[C]):
    """Subclass and implement ``execute``.

    ``name`` defaults to the class name in snake_case. ``progress_weight`` is
    this step's share of overall progress (normalized across the plan).
    ``retry`` and ``resources`` are optional per-step policies. Upstream-style
    steps that define ``name`` and ``progress_weight`` as properties work too.
    """

    name: ClassVar[str] = ""
    progress_weight: ClassVar[float] = 1.0
    # Upstream's share of job progress in percent (0: not declared). When any step
    # of a plan declares one, the plan weighs steps by it instead of progress_weight.
    progress_proportion: ClassVar[int] = 0
    retry: ClassVar[RetryPolicy | None] = None
    resources: ClassVar[StepResources | None] = None
    # Optional split of this step's share by progress category (normalized).
    category_weights: ClassVar[Mapping[str, float] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a name given as a property (upstream's style) is inherited, never shadowed
        if not cls.__dict__.get("name") and not isinstance(getattr(cls, "name", None), property):
            cls.name = _snake(cls.__name__.removesuffix("Step") or cls.__name__)

    @abstractmethod
    def execute(self, context: C) -> StepResult:
        """Do the work; return a StepResult (raise or return success=False to fail)."""

    def can_skip(self, context: C) -> bool:
        """Return True when the work is already done (e.g. resumed run)."""
        return False

    def rollback(self, context: C, result: StepResult) -> None:
        """Undo what ``execute`` did; runs where the step ran. Default: nothing."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"
