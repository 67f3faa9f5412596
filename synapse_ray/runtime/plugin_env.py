"""``ctx.env``: the run's environment as upstream's ``PluginEnvironment``.

A ``dict`` of the variables given to the executor (``Executor(env=...)``),
which is what travels with the run and is applied around user code. The
typed getters (upstream's ``get_str``, ``get_int``, ``get_bool`` ...) fall back
to the process environment, as upstream's context is built from
``os.environ``: ``ctx.env.get_bool('IS_TUNE')`` works whether the value came
from the executor or from the worker's environment.
"""

from __future__ import annotations

import os
from typing import Any

_TRUE = ("true", "1", "yes", "on")


class PluginEnvironment(dict[str, Any]):
    """A dict with typed getters; a missing key falls back to ``os.environ``."""

    @classmethod
    def from_environ(cls, prefix: str = "") -> PluginEnvironment:
        return cls({k[len(prefix) :]: v for k, v in os.environ.items() if k.startswith(prefix)})

    @classmethod
    def merge(cls, *envs: dict[str, Any]) -> PluginEnvironment:
        merged = cls()
        for env in envs:
            merged.update(env)
        return merged

    def _raw(self, key: str) -> Any:
        if key in self:
            return self[key]
        return os.environ.get(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._raw(key)
        return default if value is None else value

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self._raw(key)
        return default if value is None else str(value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        value = self._raw(key)
        return default if value is None else int(value)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        value = self._raw(key)
        return default if value is None else float(value)

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        value = self._raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            return value.strip().lower() in _TRUE
        return bool(value)

    def get_list(self, key: str, default: list[Any] | None = None) -> list[Any] | None:
        """A list, or a comma-separated string split into one."""
        value = self._raw(key)
        if isinstance(value, list | tuple):
            return list(value)
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return default

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PluginEnvironment, (dict(self),))
