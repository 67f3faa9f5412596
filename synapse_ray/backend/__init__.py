"""Access to the Synapse backend (datasets, models, jobs, logs): the client side only.

``BackendSpec`` is the serializable "where and how"; ``get_client(spec)``
gives the process's ``BackendClient``. The embedded local backend that speaks
the same API lives in :mod:`synapse_ray.localbackend`; this package never
imports it, so workers load no server code.
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
