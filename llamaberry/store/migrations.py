"""The history's schema, grown by migrations: a list of small named functions, applied in
order and counted in `PRAGMA user_version`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable


def create_runs(db: sqlite3.Connection) -> None:
    """The runs table: the whole run as JSON, plus what listing filters and sorts on."""
    db.execute(
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            mode TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            question TEXT NOT NULL,
            answer TEXT,
            error TEXT,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            seconds REAL NOT NULL DEFAULT 0,
            data TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX runs_started_at ON runs (started_at)")
    db.execute("CREATE INDEX runs_mode ON runs (mode)")
    db.execute("CREATE INDEX runs_model ON runs (model)")


def add_eval_key(db: sqlite3.Connection) -> None:
    """Tag runs made by `llamaberry eval`, so a rerun finds the items it already paid for."""
    db.execute("ALTER TABLE runs ADD COLUMN eval_key TEXT")
    db.execute("CREATE INDEX runs_eval_key ON runs (eval_key)")


def nest_mode_results(db: sqlite3.Connection) -> None:
    """Move each run's mode-specific fields (turns, synthesis, steps, final) into its `result`."""
    rows = db.execute("SELECT id, data FROM runs").fetchall()
    for run_id, data in rows:
        run = json.loads(data)
        if "result" in run:
            continue
        result = {"mode": run.get("mode")}
        for key in ("turns", "synthesis", "steps", "final"):
            if key in run:
                result[key] = run.pop(key)
        run["result"] = result
        db.execute(
            "UPDATE runs SET data = ? WHERE id = ?", (json.dumps(run, ensure_ascii=False), run_id)
        )


def add_pid(db: sqlite3.Connection) -> None:
    """Record which process saved a run, so a run its dead process left "running" is told apart."""
    db.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")
    db.execute("CREATE INDEX runs_status ON runs (status)")


def add_responses(db: sqlite3.Connection) -> None:
    """Responses served by `/v1/responses`: each names its run and keeps what a client reads
    back (the response as sent, and the conversation a follow-up continues)."""
    db.execute(
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            data TEXT NOT NULL
        )
        """
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    create_runs,
    add_eval_key,
    nest_mode_results,
    add_pid,
    add_responses,
]


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to date; return its version. Safe when two processes race."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return version
    # BEGIN IMMEDIATE takes the write lock first, so a second process waits, then sees the
    # version the first one reached and skips what is already done.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for migration in MIGRATIONS[version:]:
            migration(db)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
