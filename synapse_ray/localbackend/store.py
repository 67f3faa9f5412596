"""Storage of the local backend: SQLite records plus a files directory.

Layout of a data dir::

    token                  the access token (mode 0600)
    backend.sqlite3        records (WAL mode, so the CLI can add datasets
                           while a server runs)
    files/                 artifacts served under GET files/...
      data_collections/{id}/{name}
      models/{upload_id}/{file_name}
    uploads/{upload_id}.part   chunked uploads in progress

Records are returned as plain dicts; the server turns stored relative file
paths into absolute URLs under its configured origin.

One connection, used from one thread at a time: the server runs every store
call on a single worker thread (never on its event loop), and SQLite's busy
timeout lets a write wait for another process's short transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .records import RecordsMixin, now

__all__ = ["BUSY_TIMEOUT_S", "Store", "file_md5"]

BUSY_TIMEOUT_S = 5.0  # a write waits this long for another process's transaction
STAGING_PREFIX = ".staging-"  # add-dataset copies here before its (short) transaction
ORPHAN_GRACE_S = 3600.0  # a file with no record is a leftover once it is this old

DB_FILE = "backend.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_specifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data_collection INTEGER NOT NULL REFERENCES data_collections(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    UNIQUE (data_collection, name)
);
CREATE TABLE IF NOT EXISTS chunked_uploads (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    status TEXT NOT NULL,
    md5 TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fields TEXT NOT NULL,
    file_path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    tenant TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fields TEXT NOT NULL,
    tenant TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT,
    entry TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT,
    created TEXT NOT NULL,
    PRIMARY KEY (key, method, path)
);
"""

# Columns added after the first release: (table, column, declaration).
_ADDED_COLUMNS = (
    ("chunked_uploads", "tenant", "TEXT"),
    ("chunked_uploads", "model_id", "INTEGER"),
    ("chunked_uploads", "consumed_key", "TEXT"),
    ("idempotency", "fingerprint", "TEXT"),
)


def _days_ago(days: float) -> str:
    stamp = datetime.now(UTC) - timedelta(days=days)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_md5(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


class Store(RecordsMixin):
    """SQLite records of one data dir. One thread at a time (the server's db thread)."""

    def __init__(self, data_dir: Path) -> None:
        from .datadir import ensure_data_dir

        self.data_dir = ensure_data_dir(data_dir)
        self.files_dir = data_dir / "files"
        self.uploads_dir = data_dir / "uploads"
        self.db = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: no fsync per commit (one per checkpoint); a crash may lose
        # the last records but never corrupts the database.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row["name"] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self.db.commit()
        self.prune()

    def prune(
        self, keys_days: float = 1.0, uploads_days: float = 7.0, grace_s: float = ORPHAN_GRACE_S
    ) -> None:
        """Reclaim every kind of leftover so neither the database nor the disk grows forever.

        Old idempotency keys; uploads never finished, failed or never made into
        a model (record, ``.part`` and any file already moved for a model that
        was never recorded); ``.part`` files with no record (a crash during the
        first chunk); staging folders of an interrupted ``add-dataset``.
        """
        key_cutoff = _days_ago(keys_days)
        upload_cutoff = _days_ago(uploads_days)
        with self.db:
            self.db.execute("DELETE FROM idempotency WHERE created < ?", (key_cutoff,))
            stale = self.db.execute(
                "SELECT id FROM chunked_uploads WHERE status IN ('uploading', 'failed', 'complete') "
                "AND created < ?",
                (upload_cutoff,),
            ).fetchall()
            for row in stale:
                self.upload_path(row["id"]).unlink(missing_ok=True)
                shutil.rmtree(self.model_dir(row["id"]), ignore_errors=True)
                self.db.execute("DELETE FROM chunked_uploads WHERE id = ?", (row["id"],))
            known = {row["id"] for row in self.db.execute("SELECT id FROM chunked_uploads")}
        old = time.time() - grace_s
        for part in self.uploads_dir.glob("*.part"):
            if part.stem not in known and _mtime(part) < old:
                part.unlink(missing_ok=True)
        staging_root = self.files_dir / "data_collections"
        for folder in staging_root.glob(f"{STAGING_PREFIX}*"):
            if _mtime(folder) < old:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self.db.close()

    # -- data collections ------------------------------------------------------------

    def get_data_collection(self, collection_id: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, name, created FROM data_collections WHERE id = ?", (collection_id,)
        ).fetchone()
        if row is None:
            return None
        files = self.db.execute(
            "SELECT name, path, size, checksum FROM file_specifications "
            "WHERE data_collection = ? ORDER BY id",
            (collection_id,),
        ).fetchall()
        return {**dict(row), "files": [dict(f) for f in files]}

    def list_data_collections(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        rows = self.db.execute(
            "SELECT id FROM data_collections ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        items = [c for r in rows if (c := self.get_data_collection(r["id"])) is not None]
        return self.count("data_collections"), items

    def add_data_collection(self, name: str, files: Sequence[tuple[str, Path]]) -> int:
        """Copy ``(name, source)`` files into the store under a new collection id.

        The copy and the hashing happen in a staging folder *before* the write
        transaction, which then only inserts rows and renames the folder: a
        running server waits milliseconds for the lock, not for the copy.
        """
        root = self.files_dir / "data_collections"
        staging = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        rows = []
        try:
            for file_name, source in files:
                target = staging / file_name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                rows.append((file_name, target.stat().st_size, file_md5(target)))
            with self.db:
                cursor = self.db.execute(
                    "INSERT INTO data_collections (name, created) VALUES (?, ?)", (name, now())
                )
                collection_id = int(cursor.lastrowid or 0)
                self.db.executemany(
                    "INSERT INTO file_specifications "
                    "(data_collection, name, path, size, checksum) VALUES (?, ?, ?, ?, ?)",
                    [
                        (collection_id, file_name, f"data_collections/{collection_id}/{file_name}", size, md5)
                        for file_name, size, md5 in rows
                    ],
                )
                os.replace(staging, root / str(collection_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return collection_id

    # -- chunked uploads -----------------------------------------------------------------

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM chunked_uploads WHERE id = ?", (upload_id,)).fetchone()
        return dict(row) if row else None

    def create_upload(
        self, upload_id: str, filename: str, size: int, offset: int, tenant: str | None = None
    ) -> None:
        with self.db:
            self.db.execute(
                'INSERT INTO chunked_uploads (id, filename, size, "offset", status, tenant, created) '
                "VALUES (?, ?, ?, ?, 'uploading', ?, ?)",
                (upload_id, filename, size, offset, tenant, now()),
            )

    def count_open_uploads(self, tenant: str | None) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM chunked_uploads WHERE status = 'uploading' AND tenant IS ?", (tenant,)
        ).fetchone()
        return int(row[0])

    def set_upload(self, upload_id: str, **values: Any) -> None:
        assignments = ", ".join(f'"{key}" = ?' for key in values)
        with self.db:
            self.db.execute(
                f"UPDATE chunked_uploads SET {assignments} WHERE id = ?",
                (*values.values(), upload_id),
            )

    def upload_path(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{upload_id}.part"

    def model_dir(self, upload_id: str) -> Path:
        """Where an upload's file lives once it is a model: named by the upload, so
        moving it is repeatable after a crash (the model id is not known yet)."""
        return self.files_dir / "models" / upload_id

    # -- models ----------------------------------------------------------------------

    def create_model(
        self, fields: dict[str, Any], upload_id: str, tenant: str | None, key: str | None
    ) -> dict[str, Any] | str:
        """Make a complete upload into a model; the model, or why not (a message).

        Crash-safe in two moves: the file goes to :meth:`model_dir` first (a
        rename, repeatable: a retry finds it there), then one transaction
        records the model and marks the upload consumed, remembering the
        request's idempotency key, so a retry whose answer was lost gets this
        model back even if the key's stored answer was not written.
        """
        upload = self.get_upload(upload_id)
        if upload is None:
            return f"Chunked upload {upload_id!r} does not exist."
        if upload["status"] == "consumed" and key and upload["consumed_key"] == key:
            model = self.get_model(int(upload["model_id"]))
            if model is not None:
                return model
        if upload["status"] != "complete":
            return f"Chunked upload is {upload['status']}, not complete."
        target = self._place_upload_file(upload)
        model_id = self._record_model(fields, upload, target, tenant, key)
        model = self.get_model(model_id)
        assert model is not None
        return model

    def _place_upload_file(self, upload: dict[str, Any]) -> Path:
        target = self.model_dir(upload["id"]) / upload["filename"]
        part = self.upload_path(upload["id"])
        if part.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
        elif not target.exists():
            raise FileNotFoundError(f"The file of upload {upload['id']} is gone from the data dir.")
        return target

    def _record_model(
        self,
        fields: dict[str, Any],
        upload: dict[str, Any],
        target: Path,
        tenant: str | None,
        key: str | None,
    ) -> int:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO models (fields, file_path, file_name, file_size, checksum, tenant, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    json.dumps(fields),
                    target.relative_to(self.files_dir).as_posix(),
                    upload["filename"],
                    upload["size"],
                    upload["md5"],
                    tenant,
                    now(),
                ),
            )
            model_id = int(cursor.lastrowid or 0)
            self.db.execute(
                "UPDATE chunked_uploads SET status = 'consumed', model_id = ?, consumed_key = ? WHERE id = ?",
                (model_id, key, upload["id"]),
            )
        return model_id

    def get_model(self, model_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        return {**json.loads(record.pop("fields")), **record}

    def list_models(
        self, filters: dict[str, str], offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """``(count, one page)`` of the models matching ``filters`` (compared as text)."""
        if not filters:
            total = self.count("models")
            rows = self.db.execute("SELECT id FROM models ORDER BY id LIMIT ? OFFSET ?", (limit, offset))
            return total, [m for r in rows.fetchall() if (m := self.get_model(r["id"])) is not None]
        rows = self.db.execute("SELECT id FROM models ORDER BY id").fetchall()
        models = [m for r in rows if (m := self.get_model(r["id"])) is not None]
        matching = [m for m in models if all(str(m.get(k)) == v for k, v in filters.items())]
        return len(matching), matching[offset : offset + limit]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
