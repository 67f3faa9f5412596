"""The exception hierarchy.

Every error here must survive ``pickle`` (Ray ships exceptions between
processes): constructors take only optional keyword arguments beyond the
message, and ``__reduce__`` rebuilds them from the same values.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in another process."""

    def __init__(self, tb: str = "") -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb


class SynapseRayError(Exception):
    """Base of every error this library raises on purpose."""

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields, self.__dict__, _cause_state(self)))

    def __str__(self) -> str:
        return self.message


def _cause_state(err: BaseException) -> tuple[BaseException | None, str | None]:
    """The chained cause, if it pickles, and its formatted traceback (always)."""
    cause = err.__cause__
    if cause is None:
        return None, None
    tb = getattr(cause, "remote_traceback", None) or "".join(traceback.format_exception(cause))
    try:
        pickle.dumps(cause)
    except Exception:  # noqa: BLE001 - an unpicklable cause travels as text only
        return None, tb
    return cause, tb


def _rebuild(
    cls: type[SynapseRayError],
    message: str,
    fields: dict[str, Any],
    state: dict[str, Any],
    cause_state: tuple[BaseException | None, str | None] = (None, None),
) -> SynapseRayError:
    err = cls.__new__(cls)
    SynapseRayError.__init__(err, message, **fields)
    err.__dict__.update(state)
    cause, tb = cause_state
    if tb is not None:
        remote = RemoteTraceback(tb)
        if cause is None:
            cause = remote
        elif cause.__cause__ is None and cause.__traceback__ is None:
            cause.__cause__ = remote
        err.__cause__ = cause
        err.remote_traceback = tb
    return err


class ConfigurationError(SynapseRayError, ValueError):
    """Bad input caught before anything runs: a target, an option, a value."""


class ArgumentTypeError(ConfigurationError, TypeError):
    """An argument of the wrong type (a step that is not a ``BaseStep``, log data that is
    not a dict). Also a ``TypeError``, as Python raises for one and upstream did."""


class ValidationError(SynapseRayError, ValueError):
    """Input failed validation (upstream SDK name; base of ``ParamsValidationError``).

    Takes upstream's ``(message, details=None)`` call shape too, so plugin code
    that raises or catches it runs unchanged.
    """

    def __init__(self, message: str = "", details: Any = None, **fields: Any) -> None:
        if details is not None:
            fields["details"] = details
        super().__init__(message, **fields)


class ParamsValidationError(ValidationError):
    """Action params failed pydantic validation; ``errors`` lists each field."""


class TargetError(ConfigurationError):
    """An action target string does not name an importable action class."""


class ContextPicklingError(SynapseRayError, TypeError):
    """A context attribute cannot cross a process boundary."""


class ExecutionError(SynapseRayError):
    """Running an action failed (upstream SDK name; base of ``StepError``).

    Plugins written for the upstream SDK raise and catch it with
    ``(message, details=None)``; ``except ExecutionError`` catches every step
    and action failure of ours too.
    """

    def __init__(self, message: str = "", details: Any = None, **fields: Any) -> None:
        if details is not None:
            fields["details"] = details
        super().__init__(message, **fields)


class StepError(ExecutionError, RuntimeError):
    """A step failed; names the step and attempt and chains the cause.

    Also a ``RuntimeError``: upstream raises ``RuntimeError("Step 'x' failed: ...")``
    and plugins catch that.
    """


class ArtifactError(SynapseRayError, ValueError):
    """An artifact dir cannot be used or transferred: a path outside it, a file gone."""


class ValueTransferError(StepError):
    """A step's data could not go into Ray's object store (full, out of disk), or came back
    lost (the process that owned it died). Names the step, and the attribute and its size
    where known.
    """


class StepResultError(StepError, TypeError):
    """A step returned something other than a ``StepResult``."""


class RunCancelledError(SynapseRayError):
    """The run was cancelled before it finished."""


class ActionError(StepError):
    """A simple (non step-based) action raised; chains the cause.

    A simple action runs as a one-step plan (its step is named ``execute``),
    so this is a ``StepError`` too: one ``except StepError`` covers both kinds.
    """


class WorkerCrashedError(SynapseRayError):
    """The process running a step or action died (node lost, OOM, killed).

    Names the step and attempt when known and chains Ray's own error.
    """


class ClusterError(SynapseRayError):
    """The Ray cluster cannot run this: unreachable, stale, or missing resources."""


class RayTimeoutError(SynapseRayError, TimeoutError):
    """A call into Ray (the aggregator, a worker) did not answer in time."""


class RunTimeoutError(SynapseRayError, TimeoutError):
    """``result(timeout=...)`` ran out before the run ended; the run goes on.

    Also a ``TimeoutError``, which callers of ``result`` caught before."""


class ProgressUnavailableError(SynapseRayError):
    """The run's progress holder cannot be reached and no copy of its state exists here."""


class NoBackendError(SynapseRayError, RuntimeError):
    """Backend access was asked for, but the run has no backend configured.

    Also a ``RuntimeError``: that is what plugins written for the upstream SDK catch.
    """


PluginError = SynapseRayError
"""Upstream's base error name: an alias of ours, so ``except PluginError`` works."""


class ShardFailure:
    """One shard that failed for good: its index, the exception type and message, and
    the original exception (``None`` when it could not cross a process boundary)."""

    def __init__(
        self, index: int, error_type: str, message: str, exception: BaseException | None = None
    ) -> None:
        self.index = index
        self.error_type = error_type
        self.message = message
        self.exception = exception

    @classmethod
    def from_exception(cls, index: int, exc: BaseException) -> ShardFailure:
        return cls(index, type(exc).__name__, str(exc), exc)

    def __reduce__(self) -> tuple[Any, ...]:
        exc = self.exception
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - the type and message still travel
            exc = None
        return (ShardFailure, (self.index, self.error_type, self.message, exc))

    def __str__(self) -> str:
        return (
            f"shard {self.index}: {self.error_type}: {self.message}"
            if self.message
            else (f"shard {self.index}: {self.error_type}")
        )

    def __repr__(self) -> str:
        return f"ShardFailure(index={self.index}, error_type={self.error_type!r}, message={self.message!r})"


class ShardsFailedError(SynapseRayError):
    """More shards of a ``map_shards`` failed than ``allow_failures`` tolerates.

    ``failures`` lists every shard that failed (index, type, message, original
    exception); the first original exception is also the ``__cause__``.
    """


class ShardSourceError(SynapseRayError):
    """The iterable of shards handed to ``map_shards`` raised while being read."""
