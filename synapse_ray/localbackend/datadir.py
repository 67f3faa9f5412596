"""The data dir of the local backend: where it is, its token, and adding datasets.

Usable without a server: ``synapse-ray backend token`` and ``add-dataset``
work on the data dir directly.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from synapse_ray.backend.errors import LocalPathError

__all__ = ["ENV_HOME", "default_data_dir", "ensure_data_dir", "load_or_create_token", "register_dataset"]

ENV_HOME = "SYNAPSE_RAY_HOME"
TOKEN_FILE = "token"


def default_data_dir() -> Path:
    """``$SYNAPSE_RAY_HOME`` if set, else ``~/.synapse_ray``."""
    home = os.environ.get(ENV_HOME, "").strip()
    return Path(home).expanduser() if home else Path.home() / ".synapse_ray"


def ensure_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "files").mkdir(exist_ok=True)
    (data_dir / "uploads").mkdir(exist_ok=True)
    return data_dir


def load_or_create_token(data_dir: Path) -> str:
    """Read ``<data_dir>/token``, creating it (mode 0600) on first use."""
    ensure_data_dir(data_dir)
    path = data_dir / TOKEN_FILE
    for _ in range(3):
        try:
            existing = path.read_text().strip()
        except FileNotFoundError:
            existing = ""
        if existing:
            return existing
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another process won the race, or the file was empty: re-read
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
    path.unlink(missing_ok=True)  # an empty leftover file: start over once
    return load_or_create_token(data_dir)


def _collect_files(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """``(name, source)`` for each file; a directory contributes its files by relative path."""
    files: list[tuple[str, Path]] = []
    for path in paths:
        if not path.exists():
            raise LocalPathError(f"Cannot register {str(path)!r}: no such file or directory.")
        if path.is_file():
            files.append((path.name, path))
            continue
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            files.append((child.relative_to(path).as_posix(), child))
    if not files:
        raise LocalPathError("Cannot register a dataset without files: the paths hold none.")
    counts = Counter(name for name, _ in files)
    duplicates = sorted(name for name, seen in counts.items() if seen > 1)
    if duplicates:
        raise LocalPathError(f"Two files would share the name(s) {duplicates} in the dataset.")
    return files


def register_dataset(data_dir: Path | None, name: str, paths: Iterable[str | Path]) -> int:
    """Copy local files into the store as a new data collection; returns its id.

    Works without a running server (the CLI ``backend add-dataset`` uses it).
    Directories contribute their files under their relative paths.
    """
    if not name.strip():
        raise LocalPathError("A dataset needs a non-empty name.")
    files = _collect_files(Path(p) for p in paths)
    from .store import Store

    store = Store(data_dir or default_data_dir())
    try:
        return store.add_data_collection(name, files)
    finally:
        store.close()
