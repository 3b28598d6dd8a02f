"""The history database: the `Store` that saves runs in SQLite, lists and reopens them.

One file per user (`$LLAMABERRY_HOME/history.db`). Each run is kept whole as its pydantic JSON,
with a few indexed columns for listing and filtering. WAL mode and a busy timeout let the UI,
the CLI and an eval write at once; the schema is brought up to date on open (`migrations`).

Saving never blocks the event loop: `save_soon` snapshots the run and hands it to the store's
own writer thread, which waits on SQLite's locks instead of the loop. A run is saved when it
starts, after each call and when it ends, so a process that is killed keeps what finished; a
run left "running" by a process that no longer exists reads back as "interrupted".
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llamaberry.core.errors import InputError, LlamaberryError
from llamaberry.core.redact import redact, redact_model, remember
from llamaberry.core.results import Run, Usage
from llamaberry.store.location import default_path
from llamaberry.store.migrations import migrate

# How long opening (and each write) waits for another process holding the database.
OPEN_TIMEOUT = 10.0
# The error of such a run (its status says "interrupted" already).
INTERRUPTED = "the process running it ended before it finished"
# SQLite's integers are 64-bit: a larger LIMIT is no limit at all.
_MAX_LIMIT = 2**63 - 1

log = logging.getLogger("llamaberry")


class StoreError(LlamaberryError):
    """The history database could not be opened, read or written."""

    kind = "store"


@dataclass(frozen=True)
class RunSummary:
    """One row of `llamaberry history`: enough to choose a run without loading it."""

    id: str
    started_at: str
    mode: str
    model: str
    status: str
    question: str
    answer: str | None
    error: str | None
    total_tokens: int
    seconds: float


_SUMMARY_COLUMNS = (
    "id, started_at, mode, model, status, question, answer, error, total_tokens, seconds"
)


class Store:
    """The history database. Opened lazily on first use; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # The writer thread's queue: run id -> its newest unwritten row (older ones are moot).
        self._pending: dict[str, tuple] = {}
        self._writing = 0
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._unsaved: set[str] = set()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            # Switching a new file to WAL does not wait on the busy timeout: when two processes
            # open the same new database at once, one is told "locked" and simply tries again.
            deadline = time.monotonic() + OPEN_TIMEOUT
            while True:
                try:
                    self._db = self._open()
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise StoreError(
                            f"Cannot open the history at {self.path}: {error}"
                        ) from None
                    time.sleep(0.05)
                except (sqlite3.Error, OSError) as error:
                    raise StoreError(f"Cannot open the history at {self.path}: {error}") from None
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=OPEN_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {int(OPEN_TIMEOUT * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses nothing on an application crash, only on power loss,
            # and keeps each save cheap enough to do on the event loop.
            db.execute("PRAGMA synchronous = NORMAL")
            migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _execute(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            db = self._connect()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StoreError(f"History database error ({self.path}): {error}") from None

    def save(self, run: Run, *, eval_key: str | None = None, redact: str | None = None) -> None:
        """Insert or update `run` now; `redact` is a secret to blank out should it appear."""
        self._write(_row(run, eval_key, redact))

    def save_soon(
        self, run: Run, *, eval_key: str | None = None, redact: str | None = None
    ) -> None:
        """Snapshot `run` and have the writer thread save it; returns at once.

        Safe to call from the event loop: a locked or slow database delays the write, never
        the caller. A failed write is logged once per run, never raised (the answer matters
        more than its record). `flush` waits for what is queued.
        """
        row = _row(run, eval_key, redact)
        with self._changed:
            self._pending[run.id] = row
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_pending, name="llamaberry-history", daemon=True
                )
                self._writer.start()
                _open_stores.add(self)
            self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued save is written (or failed); False if `timeout` ran out."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._pending and not self._writing, timeout=timeout
            )

    async def aflush(self) -> None:
        """`flush` without blocking the event loop."""
        import asyncio

        await asyncio.to_thread(self.flush)

    def _write_pending(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending))
                run_id = next(iter(self._pending))
                row = self._pending.pop(run_id)
                self._writing += 1
            try:
                self._write(row)
            except Exception as error:
                self._settle(row)
                with self._changed:
                    superseded = run_id in self._pending  # a newer snapshot will be tried
                if not superseded and run_id not in self._unsaved:  # one warning per run
                    self._unsaved.add(run_id)
                    log.warning("llamaberry: run %s not saved to history: %s", run_id, error)
            finally:
                with self._changed:
                    self._writing -= 1
                    self._changed.notify_all()

    def _settle(self, row: tuple) -> None:
        """After a failed save of a run that has ended, at least say how it ended.

        With the disk full a whole new snapshot may not fit where rewriting a few fields in
        place does; without this, a finished run would be listed as running for good.
        """
        run_id, status, error, tokens, seconds = row[0], row[4], row[7], row[8], row[9]
        if status == "running":
            return
        with contextlib.suppress(StoreError):  # the warning that follows says it was not saved
            self._execute(
                """
                UPDATE runs SET status = ?, error = ?, total_tokens = ?, seconds = ?,
                    data = json_set(data, '$.status', ?, '$.error', ?)
                WHERE id = ?
                """,
                (status, error, tokens, seconds, status, error, run_id),
            )

    def _write(self, row: tuple) -> None:
        self._execute(
            f"""
            INSERT INTO runs ({_SUMMARY_COLUMNS}, provider, data, eval_key, pid)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                status = excluded.status, answer = excluded.answer, error = excluded.error,
                total_tokens = excluded.total_tokens, seconds = excluded.seconds,
                data = excluded.data, eval_key = COALESCE(excluded.eval_key, runs.eval_key),
                pid = excluded.pid
            """,
            row,
        )

    def _sweep(self) -> None:
        # Runs whose process died since they were saved read as interrupted; checked on each
        # read a person sees, since a long-lived reader (the web UI) outlives such processes.
        with self._lock:
            _mark_interrupted(self._connect())

    def get(self, run_id: str) -> Run:
        """The run with this id (or a unique prefix of it); `InputError` when there is none."""
        self._sweep()
        run_id = run_id.strip()
        escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._execute(
            "SELECT id, data FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' LIMIT 3",
            (run_id, escaped + "%"),
        )
        exact = [row for row in rows if row[0] == run_id]
        if exact:
            rows = exact
        if not rows or not run_id:
            raise InputError(f"No run '{run_id}' in the history ({self.path}).")
        if len(rows) > 1:
            raise InputError(f"'{run_id}' matches several runs; give more of the id.")
        found = _read(*rows[0])
        if isinstance(found, str):
            raise StoreError(found)
        return found

    def find_eval(self, eval_key: str, *, prompts: str | None = None) -> Run | None:
        """The newest successful run tagged with `eval_key`, if any; with `prompts`, only one
        made with that prompt version (`Run.prompt_version`)."""
        return next(self._tagged(eval_key, "'ok'", prompts), None)

    def find_unfinished(self, eval_key: str, *, prompts: str | None = None) -> Run | None:
        """The newest run tagged with `eval_key` that was stopped before it finished (cancelled,
        or interrupted), if any: its finished calls need not be paid for again. With
        `prompts`, only one made with that prompt version."""
        self._sweep()
        return next(self._tagged(eval_key, "'cancelled', 'interrupted'", prompts, 5), None)

    def other_prompts(self, eval_key: str, prompts: str) -> bool:
        """Whether a successful run tagged with `eval_key` was made with a prompt version other
        than `prompts`, or before runs recorded one (an eval runs such an item again)."""
        return any(run.prompt_version != prompts for run in self._tagged(eval_key, "'ok'"))

    def _tagged(
        self, eval_key: str, statuses: str, prompts: str | None = None, limit: int = _MAX_LIMIT
    ) -> Iterator[Run]:
        """The readable runs tagged with `eval_key` whose status is one of `statuses` (an SQL
        list of our own literals), newest first; with `prompts`, made with that version."""
        rows = self._execute(
            f"SELECT id, data FROM runs WHERE eval_key = ? AND status IN ({statuses}) "
            "ORDER BY started_at DESC LIMIT ?",
            (eval_key, limit),
        )
        for row in rows:
            found = _read(*row)
            if isinstance(found, Run) and prompts in (None, found.prompt_version):
                yield found

    def list_runs(
        self,
        *,
        mode: str | None = None,
        model: str | None = None,
        search: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
    ) -> list[RunSummary]:
        """Runs newest first, filtered by mode, model, status and text in question or answer."""
        self._sweep()
        where, params = _filters(mode=mode, model=model, search=search, status=status)
        sql = f"SELECT {_SUMMARY_COLUMNS} FROM runs{where} ORDER BY started_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(limit, _MAX_LIMIT))
        summaries = []
        for row in self._execute(sql, params):
            summary = RunSummary(*row)
            if _well_formed(summary):
                summaries.append(summary)
            else:
                log.warning("llamaberry: run %s in the history is unreadable; skipped.", row[0])
        return summaries

    def runs(self, **filters: str | None) -> Iterator[Run]:
        """Whole runs, newest first, with the same filters as `list_runs`."""
        self._sweep()
        where, params = _filters(**filters)
        rows = self._execute(
            f"SELECT id, data FROM runs{where} ORDER BY started_at DESC, rowid DESC", params
        )
        for row in rows:
            found = _read(*row)
            if isinstance(found, Run):
                yield found
            else:
                log.warning("llamaberry: %s; skipped.", found)

    def save_response(self, response_id: str, run_id: str, data: str) -> None:
        """Keep a served response (its JSON) under its id, beside the run it came from."""
        self._execute(
            "INSERT INTO responses (id, run_id, data) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, data = excluded.data",
            (response_id, run_id, redact(data)),
        )

    def find_response(self, response_id: str) -> str | None:
        """The JSON kept for a served response, or None when there is no such id."""
        rows = self._execute("SELECT data FROM responses WHERE id = ?", (response_id,))
        return rows[0][0] if rows else None

    def count(self) -> int:
        """How many runs the history holds."""
        return self._execute("SELECT COUNT(*) FROM runs")[0][0]

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read(run_id: object, data: object) -> Run | str:
    """The run a row holds, or one line saying why it cannot be read."""
    try:
        return Run.model_validate_json(data)  # type: ignore[arg-type]
    except ValidationError as error:
        kinds = {detail["type"] for detail in error.errors()}
        why = (
            "not JSON"
            if kinds & {"json_invalid", "json_type"}
            else f"{plural(error.error_count(), 'invalid field')}"
        )
        return f"run {run_id} in the history is unreadable ({why})"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _well_formed(summary: RunSummary) -> bool:
    """Whether a row's listed columns have the types a listing needs."""
    text = (summary.id, summary.started_at, summary.mode, summary.model, summary.status)
    return (
        all(isinstance(value, str) for value in (*text, summary.question))
        and all(isinstance(value, str | None) for value in (summary.answer, summary.error))
        and isinstance(summary.total_tokens, int)
        and isinstance(summary.seconds, int | float)
    )


def _row(run: Run, eval_key: str | None, secret: str | None) -> tuple:
    """The run as one row of the runs table, every known secret blanked out everywhere."""
    if run.status == "running":  # its usage is summed when it ends: what its calls cost so far
        run = run.model_copy(update={"usage": Usage.total([c.usage for c in run.calls])})
    # Every key this process knows (the client's, the environment's, URL credentials) is
    # blanked too: a run on disk outlives the session that had the key.
    remember(secret)
    data = run.model_dump_json()
    # Most runs hold nothing secret: one scan of their JSON decides, without walking them.
    if redact(data) != data:
        run = redact_model(run)
        data = run.model_dump_json()
    return (
        run.id,
        run.started_at.isoformat(),
        run.mode,
        run.model,
        run.status,
        run.question,
        run.answer,
        run.error,
        run.usage.total_tokens,
        run.seconds,
        run.provider,
        data,
        eval_key,
        os.getpid(),
    )


def _alive(pid: int) -> bool:
    """Whether process `pid` still exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 checks, it sends nothing
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _mark_interrupted(db: sqlite3.Connection) -> None:
    """Mark runs left "running" by a process that no longer exists as interrupted."""
    if sys.platform == "win32":
        return  # os.kill(pid, 0) would end the process there, not check it
    try:
        rows = db.execute("SELECT DISTINCT pid FROM runs WHERE status = 'running'").fetchall()
        dead = [pid for (pid,) in rows if pid is None or not _alive(pid)]
        if not dead:
            return
        # A reader must not wait on a writer for this: if the database is busy, the next
        # read marks them instead.
        db.execute("PRAGMA busy_timeout = 100")
        try:
            for pid in dead:
                db.execute(
                    """
                    UPDATE runs SET status = 'interrupted', error = ?,
                        data = json_set(data, '$.status', 'interrupted', '$.error', ?)
                    WHERE status = 'running' AND pid IS ?
                    """,
                    (INTERRUPTED, INTERRUPTED, pid),
                )
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(OPEN_TIMEOUT * 1000)}")
    except sqlite3.Error as error:  # a read-only or busy history still reads
        log.debug("llamaberry: interrupted runs not marked: %s", error)


# Stores with a writer thread: their queued saves are written before the interpreter exits.
_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for store in list(_open_stores):
        store.flush(timeout=OPEN_TIMEOUT + 5)


def _filters(
    *,
    mode: str | None = None,
    model: str | None = None,
    search: str | None = None,
    status: str | None = None,
) -> tuple[str, list]:
    clauses: list[str] = []
    params: list = []
    for column, value in (("mode", mode), ("model", model), ("status", status)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
        params += [pattern, pattern]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
