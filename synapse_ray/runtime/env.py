"""Environment variables for the code of a run (``Executor(env=...)``).

They are set around each piece of user code, in whichever process runs it
(this one, a Ray task, a step actor), and restored afterwards: Ray reuses
worker processes across runs, so a run's variables must not leak into the
next run that lands on the same worker. They travel inside the pickled
``RuntimeContext`` (a task argument), never in a ``runtime_env``, which the
Ray dashboard shows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

_lock = threading.Lock()
# Per variable: the value before the first open scope set it, and the open scopes'
# values, newest last. Runs in one process overlap (two LocalExecutor runs, a run
# and its shards): each scope's exit must restore what is right for the scopes
# still open, and the first value once none is, whatever order they close in.
_original: dict[str, str | None] = {}
_open: dict[str, list[tuple[int, str]]] = {}


@contextmanager
def applied_env(env: Mapping[str, str] | None) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the duration of the block, then restore it.

    Overlapping blocks in one process share the environment: while two are open, a
    variable holds the newer block's value; when the last one closes, its value from
    before the first.
    """
    if not env:
        yield
        return
    scope = object()
    values = {key: str(value) for key, value in env.items()}
    with _lock:
        for key, value in values.items():
            if key not in _open:
                _original[key] = os.environ.get(key)
                _open[key] = []
            _open[key].append((id(scope), value))
            os.environ[key] = value
    try:
        yield
    finally:
        with _lock:
            for key in values:
                _close(key, id(scope))


def _close(key: str, scope: int) -> None:
    stack = [entry for entry in _open[key] if entry[0] != scope]
    if stack:
        _open[key] = stack
        os.environ[key] = stack[-1][1]
        return
    del _open[key]
    old = _original.pop(key)
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old
