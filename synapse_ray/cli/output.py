"""Turning results and errors into what a terminal user reads."""

from __future__ import annotations

from synapse_ray.runtime.jsonable import to_json

__all__ = ["error_paragraph", "to_json"]


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
