"""Response shapes of the backend API, as ``TypedDict`` documentation.

They are plain ``dict`` objects at runtime (what ``response.json()`` gives);
these types exist so callers and the local server agree on the keys. Both the
real Synapse API and :mod:`synapse_ray.localbackend` answer with these keys.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ChunkedUpload",
    "DataCollection",
    "FileSpecification",
    "Job",
    "Model",
    "Page",
]


class FileSpecification(TypedDict):
    """One file of a data collection. ``url`` is absolute; ``checksum`` is md5 hex."""

    name: str
    url: str
    size: int
    checksum: str


class DataCollection(TypedDict):
    """``GET data_collections/{id}/?expand=file_specifications``."""

    id: int
    name: str
    file_specifications: list[FileSpecification]


class ChunkedUpload(TypedDict):
    """``PUT chunked_upload/`` and ``GET chunked_upload/{id}/``.

    ``url`` is where the next chunk goes; ``offset`` is the number of bytes the
    server has stored; ``status`` is ``uploading`` or ``complete``.
    """

    id: str
    url: str
    offset: int
    size: int
    filename: str
    status: str


class Model(TypedDict, total=False):
    """``POST models/`` and ``GET models/{id}/``.

    ``file`` is the absolute download URL of the uploaded artifact (a zip when a
    directory was uploaded); ``checksum`` is its md5 hex.
    """

    id: int
    name: str
    plugin: str | None
    version: str | None
    checkpoint: Any
    description: str | None
    configuration: dict[str, Any] | None
    file: str
    file_name: str
    file_size: int
    checksum: str
    created: str


class Job(TypedDict, total=False):
    """``POST jobs/``, ``GET jobs/{id}/``, ``PATCH jobs/{id}/``; extra keys allowed."""

    id: int
    status: str
    progress_record: Any
    metrics_record: Any
    result: Any
    created: str
    updated: str


class Page(TypedDict):
    """List endpoints: ``{"count": n, "results": [...]}``."""

    count: int
    results: list[dict[str, Any]]
