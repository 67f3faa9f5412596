"""What a step calls on its context to report: upstream SDK's step context surface.

A mixin of ``BaseStepContext``. Each call goes to the context's
``runtime_ctx``, which sends it to the run's single writer. Any object with
``set_progress``, ``log`` and ``set_metrics`` works as ``runtime_ctx`` (as in
upstream's own tests); ``log_message`` and ``log_dev_event`` fall back to
``log`` when it lacks them.
"""

from __future__ import annotations

from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.runtime.run_log import format_message


class StepContextAPI:
    """``log``, ``set_progress``, ``set_metrics``, ``log_message``, ``log_dev_event``."""

    runtime_ctx: Any
    current_step: str | None

    def _set_current_step(self, step_name: str | None) -> None:
        self.current_step = step_name

    def log(self, event: str, data: dict[str, Any] | None = None, file: str | None = None) -> None:
        self.runtime_ctx.log(event, data if data is not None else {}, file)

    def set_progress(self, current: float, total: float, category: str | None = None) -> None:
        """Progress of ``category``; without one, of the step that is running (as upstream)."""
        self.runtime_ctx.set_progress(current, total, category if category is not None else self.current_step)

    def set_metrics(self, values: dict[str, Any], category: str | None = None) -> None:
        """Latest metric values of ``category`` (default: the running step)."""
        effective = category if category is not None else self.current_step
        if effective is None:
            raise ConfigurationError("category must be given when no step is running (current_step is None)")
        self.runtime_ctx.set_metrics(values, effective)

    def log_message(self, message: str | dict[str, str], level: Any = "info", **fmt: Any) -> None:
        """A user-facing message: a string or a ``{lang: template}`` dict formatted with ``fmt``."""
        rt = self.runtime_ctx
        if hasattr(rt, "log_message"):
            rt.log_message(message, level, **fmt)
        else:
            text = format_message(message, "en", **fmt)
            rt.log("message", {"content": text, "context": str(getattr(level, "value", level))}, None)

    def log_dev_event(self, message: str, data: dict[str, Any] | None = None) -> None:
        rt = self.runtime_ctx
        if hasattr(rt, "log_dev_event"):
            rt.log_dev_event(message, data)
        else:
            rt.log("dev_event", {"message": message, "data": data}, None)
