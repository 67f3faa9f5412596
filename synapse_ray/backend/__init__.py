"""Access to the Synapse backend (datasets, models, jobs, logs): the client side only.

``BackendSpec`` is the serializable "where and how"; ``get_client(spec)``
gives the process's ``BackendClient``. The embedded local backend that speaks
the same API lives in :mod:`synapse_ray.localbackend`; this package never
imports it, so workers load no server code.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import BackendClient, close_clients, get_client
    from .errors import (
        AuthenticationError,
        BackendConnectionError,
        BackendError,
        BackendTimeoutError,
        BackendValidationError,
        ChecksumMismatchError,
        ConflictError,
        LocalPathError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        ServerError,
        UnsafePathError,
    )
    from .shapes import ChunkedUpload, DataCollection, FileSpecification, Job, Model
    from .spec import BackendSpec

from . import errors as _errors  # light: the error classes only

# Names load on first use: a worker that unpickles a BackendSpec, or sets a
# cancel scope, should not import httpx and the client for it.
_EXPORTS = {
    "BackendClient": "client",
    "close_clients": "client",
    "get_client": "client",
    "BackendSpec": "spec",
    "ChunkedUpload": "shapes",
    "DataCollection": "shapes",
    "FileSpecification": "shapes",
    "Job": "shapes",
    "Model": "shapes",
    **{name: "errors" for name in _errors.__all__},
}


# The embedded server's names, from before it had its own package: loaded from
# there only when asked for, so the client side never loads server code.
_MOVED = (
    "LocalBackendServer",
    "start_embedded",
    "register_dataset",
    "default_data_dir",
    "load_or_create_token",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        value = getattr(import_module("synapse_ray.localbackend"), name)
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthenticationError",
    "BackendClient",
    "BackendConnectionError",
    "BackendError",
    "BackendSpec",
    "BackendTimeoutError",
    "BackendValidationError",
    "ChecksumMismatchError",
    "ChunkedUpload",
    "ConflictError",
    "DataCollection",
    "FileSpecification",
    "Job",
    "LocalPathError",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "UnsafePathError",
    "close_clients",
    "get_client",
]
