"""What a batch eval has sent and received, kept beside the history so it survives the process.

A request is known by its `custom_id` (which item, which mode, which call of the run) and the
hash of its body: the same command run again sends byte-identical requests, so a request
already answered is never sent again, one already in a batch waits for that batch, and a file
already uploaded is not uploaded twice. Batch ids are written as soon as the provider gives
them, before any wait, so an interrupted eval finds its batches again.

The tables live in the history's database (`CREATE TABLE IF NOT EXISTS`: they need no
migration and are invisible to the history's own queries). The endpoint is kept as its base
URL and provider only: never a key.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from llamaberry.store.location import default_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    status TEXT NOT NULL,
    output_file_id TEXT,
    error_file_id TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_files (
    endpoint TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    file_id TEXT NOT NULL,
    PRIMARY KEY (endpoint, content_hash)
);
CREATE TABLE IF NOT EXISTS batch_calls (
    endpoint TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    batch_id TEXT,
    status INTEGER,
    response TEXT,
    PRIMARY KEY (endpoint, custom_id, body_hash)
);
"""


@dataclass(frozen=True)
class KnownCall:
    """What the ledger knows of one request: the batch it went into, and its answer (the
    status and the response body as JSON) once that batch came back."""

    batch_id: str | None
    status: int | None
    response: str | None


@dataclass(frozen=True)
class KnownBatch:
    id: str
    round: int
    requests: int
    status: str


class BatchLedger:
    """The batch tables of one history database, for one endpoint (base URL and provider)."""

    def __init__(self, endpoint: str, path: str | Path | None = None) -> None:
        self.endpoint = endpoint
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- requests ----------------------------------------------------------------------------

    def call(self, custom_id: str, body_hash: str) -> KnownCall | None:
        with self._lock:
            row = self._db.execute(
                "SELECT batch_id, status, response FROM batch_calls "
                "WHERE endpoint = ? AND custom_id = ? AND body_hash = ?",
                (self.endpoint, custom_id, body_hash),
            ).fetchone()
        return KnownCall(*row) if row else None

    def sent(self, batch_id: str, calls: list[tuple[str, str]]) -> None:
        """`calls` (custom_id, body_hash) went into `batch_id`."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO batch_calls (endpoint, custom_id, body_hash, batch_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET batch_id = excluded.batch_id, "
                "status = NULL, response = NULL",
                [(self.endpoint, c, h, batch_id) for c, h in calls],
            )

    def answered(self, answers: list[tuple[str, str, int, str]]) -> None:
        """`answers` (custom_id, body_hash, status, response JSON) came back."""
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE batch_calls SET status = ?, response = ? "
                "WHERE endpoint = ? AND custom_id = ? AND body_hash = ?",
                [(s, r, self.endpoint, c, h) for c, h, s, r in answers],
            )

    def forget(self, calls: list[tuple[str, str]]) -> None:
        """Drop what is known of `calls` (a failed line to be sent again)."""
        with self._lock, self._db:
            self._db.executemany(
                "DELETE FROM batch_calls WHERE endpoint = ? AND custom_id = ? AND body_hash = ?",
                [(self.endpoint, c, h) for c, h in calls],
            )

    def exported_hash(self, custom_id: str) -> str | None:
        """The body hash of the exported request `custom_id` (for `batch import`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body_hash FROM batch_calls WHERE endpoint = ? AND custom_id = ? "
                "AND batch_id = 'exported' ORDER BY rowid DESC LIMIT 1",
                (self.endpoint, custom_id),
            ).fetchone()
        return row[0] if row else None

    # -- files and batches -------------------------------------------------------------------

    def file(self, content_hash: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT file_id FROM batch_files WHERE endpoint = ? AND content_hash = ?",
                (self.endpoint, content_hash),
            ).fetchone()
        return row[0] if row else None

    def uploaded(self, content_hash: str, file_id: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO batch_files VALUES (?, ?, ?)",
                (self.endpoint, content_hash, file_id),
            )

    def batch_for_file(self, file_id: str) -> str | None:
        """The batch created from `file_id` that has not ended yet, if there is one (a batch
        that ended and is asked for again is a retry of its failed lines: a new batch)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM batch_jobs WHERE endpoint = ? AND input_file_id = ? "
                "AND status IN ('validating', 'in_progress', 'finalizing') "
                "ORDER BY created DESC LIMIT 1",
                (self.endpoint, file_id),
            ).fetchone()
        return row[0] if row else None

    def created(self, batch_id: str, file_id: str, round_: int, requests: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO batch_jobs "
                "(id, endpoint, input_file_id, round, requests, status, created) "
                "VALUES (?, ?, ?, ?, ?, 'validating', ?)",
                (batch_id, self.endpoint, file_id, round_, requests, time.time()),
            )

    def status(self, batch_id: str, status: str) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE batch_jobs SET status = ? WHERE id = ?", (status, batch_id))

    def batches(self) -> list[KnownBatch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, round, requests, status FROM batch_jobs WHERE endpoint = ? "
                "ORDER BY created",
                (self.endpoint,),
            ).fetchall()
        return [KnownBatch(*row) for row in rows]
