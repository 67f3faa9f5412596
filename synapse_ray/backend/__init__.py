"""Access to the Synapse backend (datasets, models, jobs, logs) and a local twin.

``BackendSpec`` is the serializable "where and how"; ``get_client(spec)``
gives the process's ``BackendClient``; ``LocalBackendServer`` /
``start_embedded`` run the same API on 127.0.0.1 for local work and tests.
"""

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
from .store import default_data_dir, load_or_create_token, register_dataset

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
    "LocalBackendServer",
    "LocalPathError",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "UnsafePathError",
    "close_clients",
    "default_data_dir",
    "get_client",
    "load_or_create_token",
    "register_dataset",
    "start_embedded",
]


def __getattr__(name: str) -> object:
    """The server pulls in aiohttp; load it only when asked, so workers import fast."""
    if name in ("LocalBackendServer", "start_embedded"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
