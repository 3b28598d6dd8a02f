"""The history as a consumer of the event stream: saved at the start, after each call and at the
end, by a writer thread, so a killed process keeps what finished and a locked database never
holds up a run."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llamaberry import CallFinished, Engine, InputError, Run, RunStarted
from llamaberry.eval import Dataset, Item, evaluate
from llamaberry.store import INTERRUPTED, Store, run_markdown
from llamaberry.testing import FakeServer, Fault

from .conftest import FIRST_TURN, refine_script

KEY = "gsk_test_SECRET_4f9a2c7e1b"


async def saved(store: Store, run_id: str, ready: Callable[[Run], bool]) -> Run:
    """The run as the history holds it once `ready` says so (the writer thread is quick, but
    not instant)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            run = await asyncio.to_thread(store.get, run_id)
        except InputError:
            run = None
        if run is not None and ready(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"the history never showed that state; last saw {run!r}")
        await asyncio.sleep(0.02)


async def test_a_run_is_saved_when_it_starts_and_after_each_call(server: FakeServer, tmp_path):
    server.reply_with(refine_script)
    reader = Store(tmp_path / "h.db")
    history = Store(tmp_path / "h.db")
    seen = []
    async with Engine(api_key=KEY, base_url=server.groq_base_url, history=history) as engine:
        # While we look at the history, the run waits: it is suspended at the event we hold.
        async for event in engine.stream("refine", "Count the r in strawberry", turns=2):
            if isinstance(event, RunStarted):
                run_id = event.run_id
                first = await saved(reader, run_id, lambda r: True)
                seen.append((first.status, len(first.result.turns)))
            elif isinstance(event, CallFinished) and event.kind == "turn":
                now = await saved(reader, run_id, lambda r, i=event.index: len(r.result.turns) == i)
                seen.append((now.status, len(now.result.turns)))
    final = await saved(reader, run_id, lambda r: r.status != "running")
    assert seen == [("running", 0), ("running", 1), ("running", 2)]
    assert final.status == "ok" and final.result.synthesis is not None
    assert reader.count() == 1  # one run, updated in place


def test_a_killed_process_keeps_its_finished_turn_and_reads_as_interrupted(
    fake_server: FakeServer, tmp_path: Path
):
    fake_server.reply_with(None)
    fake_server.enqueue(FIRST_TURN, Fault.hang())  # turn 2 never comes back
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    env.update(
        GROQ_API_KEY=KEY,
        GROQ_BASE_URL=fake_server.groq_base_url,
        LLAMABERRY_HOME=str(tmp_path),
        LLAMABERRY_MAX_RETRIES="0",
        LLAMABERRY_TIMEOUT="600",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaberry", "ask", "Count the r", "--turns", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                runs = list(Store(tmp_path / "history.db").runs())
            except Exception:
                runs = []
            if runs and len(runs[0].result.turns) == 1:
                assert runs[0].status == "running"
                break
            assert time.monotonic() < deadline, "turn 1 was never saved while the run went on"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no handler runs, nothing is flushed on the way out
        process.wait()
    (run,) = list(Store(tmp_path / "history.db").runs())
    assert run.status == "interrupted" and run.error == INTERRUPTED
    assert [t.answer for t in run.result.turns] == ["3"]
    assert run.question == "Count the r"
    # What its finished turn cost is counted, in the run and in the listing (#27).
    spent = run.result.turns[0].usage.total_tokens
    assert spent > 0 and run.usage.total_tokens == spent
    (row,) = Store(tmp_path / "history.db").list_runs()
    assert row.total_tokens == spent
    assert "- **Status:** interrupted: the process running it ended" in run_markdown(run)


async def test_a_locked_history_never_holds_up_a_run(server: FakeServer, tmp_path):
    path = tmp_path / "h.db"
    Store(path).count()  # the file exists, with its schema
    server.enqueue("Paris.")
    # Another process is writing and holds the database's write lock.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    history = Store(path)
    try:
        async with Engine(api_key=KEY, base_url=server.groq_base_url, history=history) as engine:
            run = await engine.single("Capital of France?")
            # The run is done, and its save is still waiting for the lock, off the loop.
            assert run.answer == "Paris."
            assert history.flush(timeout=0) is False
            other.execute("COMMIT")
        # Closing the engine waited for the save.
        assert Store(path).get(run.id).status == "ok"
    finally:
        other.close()


async def test_an_eval_saves_each_run_once_with_its_eval_key(server: FakeServer, tmp_path):
    server.reply_with(lambda request: "4")
    history = Store(tmp_path / "h.db")
    results = Store(tmp_path / "eval.db")
    data = Dataset(
        name="sums",
        items=[
            Item(index=0, question="2+2?", answer="4", scorer="number"),
            Item(index=1, question="3+1?", answer="4", scorer="number"),
        ],
    )
    async with Engine(api_key=KEY, base_url=server.groq_base_url, history=history) as engine:
        report = await evaluate(engine, data, ["single"], store=results)
    rows = results._execute("SELECT id, eval_key, status FROM runs")
    assert len(rows) == 2 == len(report.results)
    assert history.count() == 0  # not saved a second time, untagged, elsewhere
    assert all(key and key.startswith("eval:") and status == "ok" for _, key, status in rows)
