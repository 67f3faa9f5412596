"""``map_ray_errors``: every Ray failure becomes one of ours, in one place.

In the manner of httpx's ``map_exceptions``: code that waits on Ray wraps the
wait in ``with map_ray_errors(what, ...)`` and gets

- ``RayTaskError``: the remote exception itself (the user's own type), with
  the remote traceback attached as ``remote_traceback`` and as its cause (a
  remote that failed on a dead worker of its own is a dead worker, below; on
  data lost from the object store, a ``ValueTransferError``, not retried);
- a dead worker (``RayActorError``, Ray's ``WorkerCrashedError``,
  ``OutOfMemoryError``, ``NodeDiedError``, ``ObjectLostError``):
  ``WorkerCrashedError``, chained ``from`` Ray's error;
- ``TaskCancelledError``: ``RunCancelledError``;
- ``GetTimeoutError``: ``RayTimeoutError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from synapse_ray.errors import (
    RayTimeoutError,
    RemoteTraceback,
    RunCancelledError,
    ValueTransferError,
    WorkerCrashedError,
)


def unwrap_remote(exc: BaseException) -> BaseException:
    """Turn Ray's wrapper back into the remote exception, remote traceback attached."""
    from ray.exceptions import RayTaskError

    if not isinstance(exc, RayTaskError):
        return exc
    cause = exc.cause if exc.cause is not None else exc
    if cause is exc:
        return exc
    tb = getattr(exc, "traceback_str", None) or str(exc)
    if getattr(cause, "remote_traceback", None) is None:
        try:
            cause.remote_traceback = tb  # type: ignore[attr-defined]
        except AttributeError:
            pass
    if cause.__cause__ is None:
        cause.__cause__ = RemoteTraceback(tb)
    cause.__suppress_context__ = True  # Ray's wrapper adds nothing once unwrapped
    return cause


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _crash_types() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (
        rx.RayActorError,
        rx.WorkerCrashedError,
        rx.OutOfMemoryError,
        rx.NodeDiedError,
        rx.ObjectLostError,
        rx.LocalRayletDiedError,
    )


@contextmanager
def map_ray_errors(what: str, *, step: str | None = None, attempt: int | None = None) -> Iterator[None]:
    """Translate Ray's failures inside the block; ``what`` names the work in messages."""
    from ray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

    fields: dict[str, Any] = {}
    if step is not None:
        fields["step"] = step
    if attempt is not None:
        fields["attempt"] = attempt
    try:
        yield
    except RayTaskError as exc:
        cause = unwrap_remote(exc)
        if cause is exc:
            raise
        from ray.exceptions import ObjectLostError

        if isinstance(cause, ObjectLostError):  # Ray already tried to rebuild it: a retry cannot
            raise ValueTransferError(
                f"{what}: data it read is lost from Ray's object store ({first_line(cause)}); the "
                "process that owned it is gone",
                **fields,
            ) from cause
        if isinstance(cause, _crash_types()):  # the remote code lost a worker it waited on
            raise WorkerCrashedError(
                f"{what}: a worker process it depended on died ({first_line(cause)})", **fields
            ) from cause
        raise cause  # noqa: B904 - the remote cause chain is attached by unwrap_remote
    except TaskCancelledError as exc:
        raise RunCancelledError(f"{what} was cancelled", **fields) from exc
    except GetTimeoutError as exc:
        raise RayTimeoutError(f"{what}: Ray did not answer in time ({first_line(exc)})", **fields) from exc
    except _crash_types() as exc:
        raise WorkerCrashedError(f"{what}: the worker process died ({first_line(exc)})", **fields) from exc
