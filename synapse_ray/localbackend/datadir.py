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

import structlog

from synapse_ray.backend.errors import LocalPathError

__all__ = ["ENV_HOME", "default_data_dir", "ensure_data_dir", "load_or_create_token", "register_dataset"]

ENV_HOME = "SYNAPSE_RAY_HOME"
TOKEN_FILE = "token"

log = structlog.get_logger("synapse_ray.backend.server")


def default_data_dir() -> Path:
    """``$SYNAPSE_RAY_HOME`` if set, else ``~/.synapse_ray``."""
    home = os.environ.get(ENV_HOME, "").strip()
    return Path(home).expanduser() if home else Path.home() / ".synapse_ray"


def _make_private(path: Path, mode: int) -> None:
    """Give ``path`` exactly ``mode`` if group or others can get in; say so once.

    The data dir holds the token and every uploaded artifact: a pre-existing
    0755 dir or 0644 token file would let other local users read them.
    """
    current = path.stat().st_mode & 0o777
    if current & 0o077:
        try:
            path.chmod(mode)
        except OSError as exc:
            raise LocalPathError(
                f"{str(path)!r} is readable by other users (mode {current:o}) and cannot be made "
                f"private ({exc.strerror}); fix it with chmod {mode:o} or use another --data-dir.",
                path=str(path),
            ) from None
        log.warning(
            "backend.data_dir.tightened", path=str(path), old_mode=f"{current:o}", new_mode=f"{mode:o}"
        )


def ensure_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _make_private(data_dir, 0o700)
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
            _make_private(path, 0o600)
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


def _collect_files(paths: Iterable[Path], follow_symlinks: bool = False) -> list[tuple[str, Path]]:
    """``(name, source)`` for each file; a directory contributes its files by relative path.

    A symlink inside a directory that points outside it is refused unless
    ``follow_symlinks``: importing ``data/`` must not quietly copy (and then
    serve) ``/etc/passwd``. A path named explicitly is the caller's choice.
    """
    files: list[tuple[str, Path]] = []
    for path in paths:
        if not path.exists():
            raise LocalPathError(f"Cannot register {str(path)!r}: no such file or directory.")
        if path.is_file():
            files.append((path.name, path))
            continue
        root = path.resolve()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            if not follow_symlinks and not child.resolve().is_relative_to(root):
                raise LocalPathError(
                    f"Cannot register {str(child)!r}: it is a link to {str(child.resolve())!r}, outside "
                    f"{str(path)!r}. Copy the file in, or pass --follow-symlinks to import it anyway.",
                    path=str(child),
                )
            files.append((child.relative_to(path).as_posix(), child))
    if not files:
        raise LocalPathError("Cannot register a dataset without files: the paths hold none.")
    counts = Counter(name for name, _ in files)
    duplicates = sorted(name for name, seen in counts.items() if seen > 1)
    if duplicates:
        raise LocalPathError(f"Two files would share the name(s) {duplicates} in the dataset.")
    return files


def register_dataset(
    data_dir: Path | None, name: str, paths: Iterable[str | Path], *, follow_symlinks: bool = False
) -> int:
    """Copy local files into the store as a new data collection; returns its id.

    Works without a running server (the CLI ``backend add-dataset`` uses it).
    Directories contribute their files under their relative paths; links
    leading out of a directory are refused unless ``follow_symlinks``.
    """
    if not name.strip():
        raise LocalPathError("A dataset needs a non-empty name.")
    files = _collect_files((Path(p) for p in paths), follow_symlinks)
    from .store import Store

    store = Store(data_dir or default_data_dir())
    try:
        return store.add_data_collection(name, files)
    finally:
        store.close()
