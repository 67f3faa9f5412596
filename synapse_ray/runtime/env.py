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


@contextmanager
def applied_env(env: Mapping[str, str] | None) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the duration of the block, then restore it."""
    if not env:
        yield
        return
    with _lock:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update({key: str(value) for key, value in env.items()})
    try:
        yield
    finally:
        with _lock:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
