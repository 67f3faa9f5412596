"""The Ray Jobs result channel: signed records inside the job's own log stream.

The submitter may reach nothing but the dashboard's HTTP port (say through
``kubectl port-forward 8265``), and the only thing a running job can hand it
there is its log. So the entrypoint writes its progress snapshots and its
final outcome as *records*: one line each, signed with an HMAC keyed by a
per-submission secret that the submitter generated and shipped inside the
package (the entrypoint reads it and deletes the file before user code is
imported). A ``print`` in user code cannot produce a valid record: it does
not know the key. Every record also carries a sequence number, so a record
copied from earlier in the log is ignored too.

The submitter verifies each record, keeps the latest progress snapshot and
the final outcome, and strips every record-looking line from the log it
shows. Retention is the job log's: as long as the cluster keeps the job (its
log file on the head node), ``status``, ``logs`` and ``attach`` read it back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

MARK = "@@synapse-ray-record@@"
VERSION = "v1"

# Record kinds.
STARTED = "started"  # the entrypoint has loaded the action; carries the run id
PROGRESS = "progress"  # a ProgressSnapshot as JSON
FINAL = "final"  # the outcome: status, result or error, last snapshot


def new_key() -> str:
    """A fresh per-submission key (hex, 256 bits)."""
    return secrets.token_hex(32)


def _mac(key: str, submission_id: str, seq: int, kind: str, payload: str) -> str:
    msg = f"{VERSION}|{submission_id}|{seq}|{kind}|{payload}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


class RecordWriter:
    """Writes signed records to the job's stdout (the entrypoint side)."""

    def __init__(self, key: str, submission_id: str, stream: TextIO | None = None) -> None:
        self._key = key
        self.submission_id = submission_id
        self.stream = stream or sys.stdout
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        payload = base64.b64encode(json.dumps(body, default=str).encode()).decode()
        with self._lock:
            self._seq += 1
            mac = _mac(self._key, self.submission_id, self._seq, kind, payload)
            # One write, so the record stays whole even if user threads print meanwhile.
            self.stream.write(f"{MARK} {VERSION} {self._seq} {kind} {payload} {mac}\n")
            self.stream.flush()

    def __repr__(self) -> str:  # the key never shows
        return f"<RecordWriter submission_id={self.submission_id!r} seq={self._seq}>"


@dataclass
class RecordReader:
    """Verifies records in log text (the submitter side); passes other lines through.

    Feed it log text in any chunks, in order; ``feed`` returns the complete
    user lines seen so far (records and forged records removed).
    """

    key: str | None
    submission_id: str
    started: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    rejected: int = 0
    _seq: int = 0
    _partial: str = ""

    def feed(self, text: str) -> list[str]:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for its end
        out: list[str] = []
        for line in lines:
            out.extend(self._split(line))
        return out

    def flush(self) -> list[str]:
        """The job ended: its last line counts even without a newline."""
        if not self._partial:
            return []
        rest, self._partial = self._partial, ""
        return self._split(rest)

    def _split(self, line: str) -> list[str]:
        """The user part of ``line``: a record (valid or not) is taken out.

        A record may follow text a user ``print`` left without a newline; that
        text stays in the log. Validity rests on the MAC alone.
        """
        at = line.find(MARK)
        if at < 0:
            return [line]
        self._take(line[at + len(MARK) :])
        head = line[:at]
        return [head] if head.strip() else []

    def _take(self, text: str) -> None:
        parts = text.split()
        if len(parts) != 5 or parts[0] != VERSION or self.key is None:
            self.rejected += 1
            return
        _, seq_text, kind, payload, mac = parts
        try:
            seq = int(seq_text)
        except ValueError:
            self.rejected += 1
            return
        expected = _mac(self.key, self.submission_id, seq, kind, payload)
        if not hmac.compare_digest(expected, mac) or seq <= self._seq:
            self.rejected += 1  # forged, or a valid record replayed
            return
        self._seq = seq
        try:
            body = json.loads(base64.b64decode(payload))
        except ValueError:
            self.rejected += 1
            return
        if kind == STARTED:
            self.started = body
        elif kind == PROGRESS:
            self.progress = body
        elif kind == FINAL:
            self.final = body
            if body.get("progress") is not None:
                self.progress = body["progress"]

    def __repr__(self) -> str:
        return f"<RecordReader submission_id={self.submission_id!r} seq={self._seq} rejected={self.rejected}>"
