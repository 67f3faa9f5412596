"""The embedded local backend: the Synapse API subset on 127.0.0.1, SQLite + files.

A real HTTP server (aiohttp) so everything that talks to Synapse runs on a
fresh machine, and the twin the test suite talks to. The client package
(:mod:`synapse_ray.backend`) never imports this one; the dependency points
only this way.
"""

from .datadir import default_data_dir, load_or_create_token, register_dataset
from .server import LocalBackendServer, start_embedded
from .store import Store

__all__ = [
    "LocalBackendServer",
    "Store",
    "default_data_dir",
    "load_or_create_token",
    "register_dataset",
    "start_embedded",
]
