"""The pickler contexts use, injected by the layer that ships them.

``runtime/`` and ``steps/`` know nothing of Ray; the Ray wing installs Ray's
cloudpickle here (it honours ``register_pickle_by_value``, which is how
classes from file targets reach workers that cannot import them).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

_dumps: Callable[..., bytes] = pickle.dumps


def use_dumps(dumps: Callable[..., bytes]) -> None:
    """Install the pickling function for contexts (idempotent)."""
    global _dumps
    _dumps = dumps


def dumps(value: Any) -> bytes:
    return _dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


loads = pickle.loads
