"""``ctx.params`` of a step context: a dict, as upstream hands steps.

Upstream's ``create_context()`` passes ``params.model_dump()``, so plugins
write ``context.params['dataset_id']`` and ``context.params.get('epochs', 10)``.
Our own examples read ``context.params.epochs``; ``ParamsDict`` serves both.
It is a plain ``dict`` subclass, so it pickles and compares as a dict.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ParamsDict(dict[str, Any]):
    """A dict whose keys also read as attributes (nested dicts too)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(
                f"params has no field {name!r} (fields: {', '.join(self) or 'none'})"
            ) from None
        return ParamsDict(value) if type(value) is dict else value

    def __reduce__(self) -> tuple[Any, ...]:
        return (ParamsDict, (dict(self),))


def params_dict(params: Any) -> ParamsDict:
    """The validated params model (or a mapping) as a ``ParamsDict``."""
    if isinstance(params, BaseModel):
        return ParamsDict(params.model_dump())
    return ParamsDict(dict(params or {}))
