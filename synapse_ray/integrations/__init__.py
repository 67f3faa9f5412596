"""``autolog(framework, action)``: framework callbacks that report to the action.

``BaseTrainAction.autolog('ultralytics')`` calls this. Integrations report
through the action's own ``set_progress``, ``set_metrics`` and ``log``, so
everything they send goes to the run's single writer like any other call.
"""

from __future__ import annotations

from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.integrations import ultralytics
from synapse_ray.runtime.autolog import AutologState, current, set_current

_INTEGRATIONS: dict[str, Any] = {"ultralytics": ultralytics}


def list_integrations() -> list[str]:
    return sorted(_INTEGRATIONS)


def _integration(framework: str) -> Any:
    try:
        return _INTEGRATIONS[framework.lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"Unknown autolog framework {framework!r}; supported: {', '.join(list_integrations())}"
        ) from None


def autolog(framework: str, action: Any) -> None:
    """Report ``framework``'s training progress, metrics and artifacts to ``action``."""
    _integration(framework).enable(action)


def disable_autolog(framework: str) -> None:
    _integration(framework)
    set_current(None)


__all__ = ["AutologState", "autolog", "current", "disable_autolog", "list_integrations"]
