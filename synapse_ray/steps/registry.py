"""The ordered list of steps an action registers in ``setup_steps``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from synapse_ray.errors import ArgumentTypeError, ConfigurationError
from synapse_ray.steps.step import BaseStep

C = TypeVar("C")


class StepRegistry(Generic[C]):
    """Ordered, name-unique steps. Order here is execution order."""

    def __init__(self) -> None:
        self._steps: list[BaseStep[C]] = []

    def _check(self, step: BaseStep[C]) -> None:
        if not isinstance(step, BaseStep):
            raise ArgumentTypeError(
                f"StepRegistry accepts BaseStep instances, got {type(step).__name__}: {step!r}"
            )
        name = step.name
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Step {type(step).__name__} has no name")
        if name in self:
            raise ConfigurationError(f"Step '{name}' is already registered; step names must be unique")

    def _index(self, name: str) -> int:
        for i, step in enumerate(self._steps):
            if step.name == name:
                return i
        known = ", ".join(repr(s.name) for s in self._steps) or "none"
        raise ConfigurationError(f"Unknown step '{name}' (registered steps: {known})")

    def register(self, step: BaseStep[C]) -> StepRegistry[C]:
        self._check(step)
        self._steps.append(step)
        return self

    def unregister(self, name: str) -> BaseStep[C]:
        return self._steps.pop(self._index(name))

    def insert_before(self, anchor: str, step: BaseStep[C]) -> StepRegistry[C]:
        index = self._index(anchor)
        self._check(step)
        self._steps.insert(index, step)
        return self

    def insert_after(self, anchor: str, step: BaseStep[C]) -> StepRegistry[C]:
        index = self._index(anchor)
        self._check(step)
        self._steps.insert(index + 1, step)
        return self

    def get_steps(self) -> list[BaseStep[C]]:
        return list(self._steps)

    # -- upstream's weight views -----------------------------------------
    @property
    def total_weight(self) -> float:
        """Sum of the steps' ``progress_weight`` (each step's share is its weight over this)."""
        return float(sum(s.progress_weight for s in self._steps))

    def get_step_proportions(self) -> dict[str, int]:
        """``{name: progress_proportion}`` of the steps that declare one (> 0)."""
        return {s.name: s.progress_proportion for s in self._steps if s.progress_proportion > 0}

    def get_step_orders(self) -> dict[str, int]:
        """``{name: position}`` in execution order."""
        return {s.name: i for i, s in enumerate(self._steps)}

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self._steps)

    def __iter__(self) -> Iterator[BaseStep[C]]:
        return iter(list(self._steps))

    def __len__(self) -> int:
        return len(self._steps)

    def __bool__(self) -> bool:
        return bool(self._steps)

    def __repr__(self) -> str:
        return f"StepRegistry({[s.name for s in self._steps]})"
