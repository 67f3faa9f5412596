"""Results as JSON: what ``run`` prints and what a Ray Job's final record carries.

Here (not in ``cli/``) so the Jobs entrypoint can use it without importing the CLI.
"""

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
