"""Turning results and errors into what a terminal user reads."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python


def _fallback(value: Any) -> Any:
    """What pydantic's encoder does not know: numpy scalars and arrays, else the repr."""
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return repr(value)


def to_json(value: Any) -> str:
    """Results as JSON: models, dataclasses, paths, sets, datetimes and numpy values included."""
    return json.dumps(to_jsonable_python(value, fallback=_fallback), indent=2, sort_keys=True)


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
