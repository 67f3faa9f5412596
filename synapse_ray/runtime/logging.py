"""structlog setup: bound run/step/attempt ids, redaction, JSON off a terminal.

structlog (with rich behind it) is imported on first use, not at import: a
fresh Ray worker that runs a step without logging skips about 60 ms.

Redaction is a processor in the pipeline, so every log line passes it no
matter who logged it: keys that look secret are masked, ``SecretStr`` values
stay masked, and any registered secret value is cut out of free text.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

from pydantic import SecretStr

MASK = "**********"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|authorization|api[_-]?key|credential)", re.I)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_configured = False


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret value so it is cut out of any log text that contains it."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    for secret in tuple(_secrets):  # a copy: another thread may register one meanwhile
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if _SECRET_KEY.search(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(key, v) for v in value)
    return value


def redact_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and known secret values."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


class _CurrentStderr:
    """Looks ``sys.stderr`` up at each write, so redirections (tests, live displays) apply."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _stderr_logger(*args: Any) -> Any:
    import structlog

    return structlog.PrintLogger(file=_CurrentStderr())  # type: ignore[arg-type]


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger, our pipeline installed first unless the app has its own."""
    import structlog

    configure_logging()
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)


def _install_redaction(structlog: Any) -> None:
    """Put the redaction processor into an application's own pipeline, before its renderer.

    An application that configured structlog first keeps its format and
    destination, but secrets are still cut out of everything logged through it.
    """
    processors = list(structlog.get_config().get("processors") or [])
    if redact_processor in processors:
        return
    at = max(0, len(processors) - 1)  # the last processor renders; redact before it
    processors.insert(at, redact_processor)
    structlog.configure(processors=processors)


def configure_logging(level: str = "INFO", json: bool | None = None, force: bool = False) -> None:
    """Install our pipeline; if the application configured structlog itself, add redaction to its."""
    global _configured
    import structlog

    if _configured and not force:
        return
    if structlog.is_configured() and not force:
        _install_redaction(structlog)  # the application's pipeline stays; ours only adds redaction
        _configured = True
        return
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_processor,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _configured = True


def configure_logging_when_imported() -> None:
    """Our pipeline from structlog's first import in this process on, at no cost before it.

    A fresh Ray worker does not import structlog (about 100 ms) unless something
    logs. User code there that imports structlog itself and logs would get
    structlog's defaults: stdout and no redaction. So until structlog is
    imported, a finder waits for that import and configures right after it.
    """
    if "structlog" in sys.modules:
        configure_logging()
        return
    with _hook_lock:
        if not any(isinstance(finder, _ConfigureOnImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _ConfigureOnImport())


_hook_lock = threading.Lock()


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands structlog's own spec back with a loader that configures."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "structlog":
            return None
        with _hook_lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenConfigure(spec.loader)
        return spec


class _ThenConfigure(importlib.abc.Loader):
    """structlog's own loader, then our pipeline; the module keeps its own loader after."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # leave no trace
        try:
            configure_logging()
        except Exception:  # noqa: BLE001 - never break the caller's import; get_logger retries
            pass
