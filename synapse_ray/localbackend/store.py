"""Storage of the local backend: SQLite records plus a files directory.

Layout of a data dir::

    token                  the access token (mode 0600)
    backend.sqlite3        records (WAL mode, so the CLI can add datasets
                           while a server runs)
    files/                 artifacts served under GET files/...
      data_collections/{id}/{name}
      models/{id}/{file_name}
    uploads/{upload_id}.part   chunked uploads in progress

Records are returned as plain dicts; the server turns stored relative file
paths into absolute URLs for the requesting origin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["Store", "file_md5"]

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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _days_ago(days: float) -> str:
    stamp = datetime.now(UTC) - timedelta(days=days)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_md5(path: Path, block: int = 1024 * 1024) -> str:
    hasher = hashlib.md5()
    with path.open("rb") as fh:
        while data := fh.read(block):
            hasher.update(data)
    return hasher.hexdigest()


class Store:
    """SQLite records of one data dir. Not thread-safe: one owner thread."""

    def __init__(self, data_dir: Path) -> None:
        from .datadir import ensure_data_dir

        self.data_dir = ensure_data_dir(data_dir)
        self.files_dir = data_dir / "files"
        self.uploads_dir = data_dir / "uploads"
        self.db = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: no fsync per commit (one per checkpoint); a crash may lose
        # the last records but never corrupts the database.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.db.commit()
        self.prune()

    def prune(self, keys_days: float = 1.0, uploads_days: float = 7.0) -> None:
        """Forget old idempotency keys and abandoned uploads so neither grows forever."""
        key_cutoff = _days_ago(keys_days)
        upload_cutoff = _days_ago(uploads_days)
        with self.db:
            self.db.execute("DELETE FROM idempotency WHERE created < ?", (key_cutoff,))
            stale = self.db.execute(
                "SELECT id FROM chunked_uploads WHERE status IN ('uploading', 'failed') AND created < ?",
                (upload_cutoff,),
            ).fetchall()
            for row in stale:
                self.upload_path(row["id"]).unlink(missing_ok=True)
                self.db.execute("DELETE FROM chunked_uploads WHERE id = ?", (row["id"],))

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

    def list_data_collections(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id FROM data_collections ORDER BY id").fetchall()
        return [c for r in rows if (c := self.get_data_collection(r["id"])) is not None]

    def add_data_collection(self, name: str, files: Sequence[tuple[str, Path]]) -> int:
        """Copy ``(name, source)`` files into the store under a new collection id."""
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO data_collections (name, created) VALUES (?, ?)", (name, now())
            )
            collection_id = int(cursor.lastrowid or 0)
            folder = self.files_dir / "data_collections" / str(collection_id)
            try:
                for file_name, source in files:
                    target = folder / file_name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    self.db.execute(
                        "INSERT INTO file_specifications "
                        "(data_collection, name, path, size, checksum) VALUES (?, ?, ?, ?, ?)",
                        (
                            collection_id,
                            file_name,
                            target.relative_to(self.files_dir).as_posix(),
                            target.stat().st_size,
                            file_md5(target),
                        ),
                    )
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return collection_id

    # -- chunked uploads -----------------------------------------------------------------

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM chunked_uploads WHERE id = ?", (upload_id,)).fetchone()
        return dict(row) if row else None

    def create_upload(self, upload_id: str, filename: str, size: int, offset: int) -> None:
        with self.db:
            self.db.execute(
                'INSERT INTO chunked_uploads (id, filename, size, "offset", status, created) '
                "VALUES (?, ?, ?, ?, 'uploading', ?)",
                (upload_id, filename, size, offset, now()),
            )

    def set_upload(self, upload_id: str, **values: Any) -> None:
        assignments = ", ".join(f'"{key}" = ?' for key in values)
        with self.db:
            self.db.execute(
                f"UPDATE chunked_uploads SET {assignments} WHERE id = ?",
                (*values.values(), upload_id),
            )

    def upload_path(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{upload_id}.part"

    # -- models ----------------------------------------------------------------------

    def create_model(
        self, fields: dict[str, Any], upload: dict[str, Any], tenant: str | None
    ) -> dict[str, Any]:
        """Record a model and move its completed upload under ``files/models/{id}/``."""
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO models (fields, file_path, file_name, file_size, checksum, tenant, "
                "created) VALUES (?, '', ?, ?, ?, ?, ?)",
                (
                    json.dumps(fields),
                    upload["filename"],
                    upload["size"],
                    upload["md5"],
                    tenant,
                    now(),
                ),
            )
            model_id = int(cursor.lastrowid or 0)
            target = self.files_dir / "models" / str(model_id) / upload["filename"]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.upload_path(upload["id"]), target)
            self.db.execute(
                "UPDATE models SET file_path = ? WHERE id = ?",
                (target.relative_to(self.files_dir).as_posix(), model_id),
            )
            self.db.execute("UPDATE chunked_uploads SET status = 'consumed' WHERE id = ?", (upload["id"],))
        model = self.get_model(model_id)
        assert model is not None
        return model

    def get_model(self, model_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        return {**json.loads(record.pop("fields")), **record}

    def list_models(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id FROM models ORDER BY id").fetchall()
        models = [m for r in rows if (m := self.get_model(r["id"])) is not None]
        return [m for m in models if all(str(m.get(k)) == v for k, v in filters.items())]

    def count(self, table: str) -> int:
        if table not in {"data_collections", "models", "jobs", "logs", "chunked_uploads"}:
            raise ValueError(table)
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # -- jobs and logs -------------------------------------------------------------------

    def create_job(self, fields: dict[str, Any], tenant: str | None) -> dict[str, Any]:
        stamp = now()
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO jobs (fields, tenant, created, updated) VALUES (?, ?, ?, ?)",
                (json.dumps(fields), tenant, stamp, stamp),
            )
        job = self.get_job(int(cursor.lastrowid or 0))
        assert job is not None
        return job

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        return {**json.loads(record.pop("fields")), **record}

    def update_job(self, job_id: int, changes: dict[str, Any]) -> dict[str, Any] | None:
        with self.db:
            row = self.db.execute("SELECT fields FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            fields = {**json.loads(row["fields"]), **changes}
            self.db.execute(
                "UPDATE jobs SET fields = ?, updated = ? WHERE id = ?",
                (json.dumps(fields), now(), job_id),
            )
        return self.get_job(job_id)

    def list_jobs(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id FROM jobs ORDER BY id").fetchall()
        return [j for r in rows if (j := self.get_job(r["id"])) is not None]

    def add_logs(self, entries: Iterable[dict[str, Any]]) -> int:
        stamp = now()
        rows = [(str(e["job"]) if e.get("job") is not None else None, json.dumps(e), stamp) for e in entries]
        with self.db:
            self.db.executemany("INSERT INTO logs (job, entry, created) VALUES (?, ?, ?)", rows)
        return len(rows)

    def list_logs(self, job: str | None) -> list[dict[str, Any]]:
        if job is None:
            rows = self.db.execute("SELECT id, entry, created FROM logs ORDER BY id").fetchall()
        else:
            rows = self.db.execute(
                "SELECT id, entry, created FROM logs WHERE job = ? ORDER BY id", (job,)
            ).fetchall()
        return [{**json.loads(r["entry"]), "id": r["id"], "created": r["created"]} for r in rows]

    # -- idempotency -----------------------------------------------------------------

    def get_idempotent(self, key: str, method: str, path: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT status, body, content_type FROM idempotency WHERE key = ? AND method = ? AND path = ?",
            (key, method, path),
        ).fetchone()
        return dict(row) if row else None

    def put_idempotent(
        self, key: str, method: str, path: str, status: int, body: bytes, content_type: str | None
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO idempotency "
                "(key, method, path, status, body, content_type, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, method, path, status, body, content_type, now()),
            )
