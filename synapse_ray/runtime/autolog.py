"""Which action autolog callbacks report to, in this thread of execution.

A ``ContextVar``: two runs in one process (the local executor runs each in its
own thread) never report to each other's action. It is cleared after every
call into user code (``steps.placement.user_code``): Ray reuses worker
processes, and a later run must not report to an earlier run's action.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AutologState:
    action: Any
    total_epochs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. model_path, set at train end


_current: ContextVar[AutologState | None] = ContextVar("synapse_ray_autolog", default=None)


def current() -> AutologState | None:
    return _current.get()


def set_current(state: AutologState | None) -> None:
    _current.set(state)
