"""Files that follow their steps: named artifact directories.

``ctx.artifact_dir(name)`` is a directory under the run's scratch dir on the
machine where the step runs. When a step that opened it returns from another
process (a Ray step actor), the placement lists the directory; if its files
changed, they are packed (read once) and travel like any large context value
(through Ray's object store). A later step that calls ``artifact_dir(name)``
gets the same files: untouched when its machine already holds them (same node
and scratch dir: the listing matches), else written there from the packed
copy first. In-process nothing is packed or copied.

Every file is listed by relative path, size and modification time; that
listing is what "already holds them" compares.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synapse_ray.errors import ArtifactError
from synapse_ray.runtime.pickling import ByReference

ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, POSIX separators
    size: int
    mtime_ns: int


@dataclass
class ArtifactRecord:
    """One artifact as the run knows it: its listing and where its packed files are."""

    name: str
    files: tuple[FileEntry, ...] = ()
    step: str | None = None
    # The packed files (``ByReference`` into the object store, or the list itself when small);
    # None: the files were never packed (in-process run).
    payload: Any = None

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class PackedFile:
    path: str
    data: Any  # a bytearray when packed (travels out of band), maybe a buffer view once received
    mtime_ns: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        data = self.data if isinstance(self.data, bytes | bytearray) else bytearray(self.data)
        return (PackedFile, (self.path, data, self.mtime_ns))


def artifact_path(work_dir: Path, name: str) -> Path:
    """The directory of artifact ``name``; a name that leaves the artifact dir is refused."""
    if not isinstance(name, str) or not name.strip():
        raise ArtifactError(f"Artifact name must be a non-empty string, got {name!r}", artifact=name)
    root = (work_dir / ARTIFACTS_DIR).resolve()
    path = (root / name).resolve()
    if path == root or root not in path.parents:
        shown = os.path.join(root, name)
        raise ArtifactError(
            f"Artifact path '{shown}' (resolves to '{path}') is not inside the artifact dir '{root}': "
            "use a plain name such as 'checkpoint' or 'data/train'",
            artifact=name,
            path=shown,
        )
    return path


def scan(path: Path, name: str, step: str | None = None) -> tuple[FileEntry, ...]:
    """List the files of an artifact dir; links that lead outside it are refused, naming them."""
    root = path.resolve()
    entries: list[FileEntry] = []
    if not root.is_dir():
        return ()
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for filename in files:
            full = Path(dirpath) / filename
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if root != target and root not in target.parents:
                    raise ArtifactError(
                        f"{_where(step)}artifact '{name}': '{full}' links to '{target}', outside the "
                        "artifact dir; copy the file in instead",
                        artifact=name,
                        path=str(full),
                        step=step,
                    )
            try:
                st = full.stat()
            except FileNotFoundError:
                raise _gone(name, full, step) from None
            entries.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries, key=lambda e: e.path))


def pack(path: Path, name: str, files: tuple[FileEntry, ...], step: str | None = None) -> list[PackedFile]:
    """Read the listed files (one read each) for transfer; a file gone since listing is named."""
    out: list[PackedFile] = []
    for entry in files:
        full = path / entry.path
        try:
            with open(full, "rb") as fh:
                data = bytearray(entry.size)
                got = fh.readinto(data)
        except FileNotFoundError:
            raise _gone(name, full, step) from None
        if got != entry.size:
            del data[got:]
        out.append(PackedFile(entry.path, data, entry.mtime_ns))
    return out


def unpack(path: Path, packed: list[PackedFile]) -> None:
    """Write packed files into ``path`` (emptied first), keeping their modification times."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for item in packed:
        full = path / item.path
        full.parent.mkdir(parents=True, exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(item.data)
        os.utime(full, ns=(item.mtime_ns, item.mtime_ns))


def materialize(record: ArtifactRecord, path: Path) -> None:
    """Make ``path`` hold the record's files, unless it already does."""
    if record.payload is None or scan(path, record.name) == record.files:
        return
    payload = record.payload.get() if isinstance(record.payload, ByReference) else record.payload
    unpack(path, payload)


def _where(step: str | None) -> str:
    return f"Step '{step}': " if step else ""


def _gone(name: str, full: Path, step: str | None) -> ArtifactError:
    return ArtifactError(
        f"{_where(step)}artifact '{name}': file '{full}' disappeared before it could be transferred",
        artifact=name,
        path=str(full),
        step=step,
    )
