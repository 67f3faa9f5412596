"""Turning results and errors into what a terminal user reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return repr(value)


def to_json(value: Any) -> str:
    return json.dumps(value, default=_default, indent=2, sort_keys=True)


def error_paragraph(exc: BaseException, run_id: str | None = None) -> str:
    """One paragraph: what failed, why (the chained cause), and the run id."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    rollback = getattr(exc, "rollback_errors", None)
    if rollback:
        text += f" Rollback errors: {'; '.join(rollback)}."
    if run_id:
        text += f" [run {run_id}]"
    return text
