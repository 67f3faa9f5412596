"""Jobs, logs and idempotency records of the local backend's store.

A mixin of :class:`~.store.Store` (which owns the connection): these tables
are plain JSON records with no files attached, kept apart to keep each
module short.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["RecordsMixin"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordsMixin:
    """Jobs, log entries and stored idempotent answers."""

    db: sqlite3.Connection

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

    def list_jobs(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        rows = self.db.execute("SELECT id FROM jobs ORDER BY id LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return self.count("jobs"), [j for r in rows if (j := self.get_job(r["id"])) is not None]

    def add_logs(self, entries: Iterable[dict[str, Any]]) -> int:
        stamp = now()
        rows = [(str(e["job"]) if e.get("job") is not None else None, json.dumps(e), stamp) for e in entries]
        with self.db:
            self.db.executemany("INSERT INTO logs (job, entry, created) VALUES (?, ?, ?)", rows)
        return len(rows)

    def list_logs(self, job: str | None, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        where, args = ("", ()) if job is None else ("WHERE job = ?", (job,))
        total = int(self.db.execute(f"SELECT COUNT(*) FROM logs {where}", args).fetchone()[0])
        rows = self.db.execute(
            f"SELECT id, entry, created FROM logs {where} ORDER BY id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return total, [{**json.loads(r["entry"]), "id": r["id"], "created": r["created"]} for r in rows]

    # -- idempotency -----------------------------------------------------------------

    def get_idempotent(self, key: str, method: str, path: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT status, body, content_type, fingerprint FROM idempotency "
            "WHERE key = ? AND method = ? AND path = ?",
            (key, method, path),
        ).fetchone()
        return dict(row) if row else None

    def put_idempotent(
        self,
        key: str,
        method: str,
        path: str,
        status: int,
        body: bytes,
        content_type: str | None,
        fingerprint: str | None = None,
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO idempotency "
                "(key, method, path, status, body, content_type, fingerprint, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, method, path, status, body, content_type, fingerprint, now()),
            )
