"""Log entries of a run: what ``log``, ``log_message``, ``log_metric`` and
``log_dev_event`` produce, in the shape the backend's ``POST logs/`` takes.

An entry is built where the user code runs (any process) and travels as a
``LOG`` progress event to the run's single writer, which keeps a short tail
for ``handle.logs()`` and sends batches to the backend. A file attached to an
entry exists only on the machine that logged it, so it is read here and
travels inside the entry as a ``data:`` URI (what the backend's logs endpoint
takes) -- but only when the run has a backend job to send it to.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synapse_ray.errors import ArgumentTypeError, ConfigurationError
from synapse_ray.runtime.logging import get_logger, redact_processor

# A file larger than this is not attached (the entry is still sent, without it).
FILE_MAX_BYTES = int(os.environ.get("SYNAPSE_RAY_LOG_FILE_MAX_BYTES", str(64 * 1024 * 1024)))
LEVELS = ("debug", "info", "success", "warning", "danger", "error", "critical")


def level_name(level: Any) -> str:
    """``'info'``, ``LogLevel.INFO`` or ``logging.INFO``-like names, as the backend's string."""
    value = str(getattr(level, "value", level) or "info").lower()
    if value not in LEVELS:
        raise ConfigurationError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
    return value


def make_entry(
    event: str,
    data: Mapping[str, Any] | None,
    *,
    job: str | None,
    step: str | None,
    level: str = "info",
) -> dict[str, Any]:
    """``{event, data, datetime, job, step, level}``, redacted like a log line."""
    if data is not None and not isinstance(data, Mapping):
        raise ArgumentTypeError(f"log data must be a dict, got {type(data).__name__}")
    entry: dict[str, Any] = {
        "event": event,
        "data": dict(data or {}),
        "datetime": datetime.now(UTC).isoformat(),
        "job": job,
        "step": step,
        "level": level,
    }
    return dict(redact_processor(None, level, entry))


def file_data_uri(path: str | Path) -> str | None:
    """The file as a ``data:`` URI, or None (with a warning) when it cannot be attached.

    A missing or oversized file never fails the training loop that logged it.
    """
    source = Path(path)
    try:
        size = source.stat().st_size
        if size > FILE_MAX_BYTES:
            get_logger("synapse_ray.logs").warning(
                "log_file_too_large", file=str(source), size=size, limit=FILE_MAX_BYTES
            )
            return None
        content = source.read_bytes()
    except OSError as exc:
        get_logger("synapse_ray.logs").warning("log_file_unreadable", file=str(source), error=str(exc))
        return None
    mime = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URI (tests and the local backend read files back)."""
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError("not a base64 data URI")
    return base64.b64decode(payload)


def format_message(message: str | Mapping[str, str], language: str = "en", **fmt: Any) -> str:
    """A plain string, or a ``{lang: template}`` dict resolved for ``language`` (else English)."""
    if isinstance(message, Mapping):
        template = message.get(language) or message.get("en") or next(iter(message.values()), "")
    else:
        template = str(message)
    return template.format(**fmt) if fmt else template


def tail_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as kept in the display tail: an attached file's content is not kept."""
    kept = dict(entry)
    file = kept.get("file")
    if isinstance(file, str) and file.startswith("data:"):
        kept["file"] = f"<attached, {len(file)} bytes encoded>"
    return kept
