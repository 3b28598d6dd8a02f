"""The history store: every run saved whole, read back equal, listed, exported, never the key."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, Run, RunFailedError
from llamaberry.cli import cli
from llamaberry.store import INTERRUPTED, Store, default_path, run_markdown
from llamaberry.store.migrations import MIGRATIONS, create_runs
from llamaberry.testing import FakeServer, Fault

from .conftest import FIRST_TURN, refine_script

QUESTION = 'How many times does the letter r appear in "strawberry"?'
KEY = "gsk_test_SECRET_4f9a2c7e1b"


def groq_engine(server: FakeServer, **kwargs) -> Engine:
    return Engine(api_key=KEY, base_url=server.groq_base_url, **kwargs)


def make_run(mode: str = "single", question: str = "q", minutes_ago: int = 0, **kw) -> Run:
    started = datetime(2026, 5, 1, 12, 0, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    return Run(mode=mode, model="m1", provider="groq", question=question, started_at=started, **kw)


async def test_a_saved_run_reads_back_equal(server: FakeServer):
    server.reply_with(refine_script)
    async with groq_engine(server) as engine:
        run = await engine.refine(QUESTION)
    with Store() as store:
        back = store.get(run.id)
    assert back == run
    assert back.calls[1].messages == run.calls[1].messages
    assert back.calls[0].reply == FIRST_TURN
    assert back.result.synthesis is not None and back.usage.total_tokens > 0


async def test_every_run_is_saved_by_default_under_llamaberry_home(server: FakeServer, tmp_path):
    server.enqueue("Paris.")
    async with groq_engine(server) as engine:
        await engine.single("Capital of France?")
    assert default_path() == tmp_path / "home" / "history.db"
    with Store() as store:
        [row] = store.list_runs()
    assert (row.mode, row.status, row.answer) == ("single", "ok", "Paris.")


async def test_history_can_be_turned_off(server: FakeServer, monkeypatch, tmp_path):
    server.enqueue("Paris.", "Rome.")
    async with groq_engine(server, history=False) as engine:
        await engine.single("Capital of France?")
    monkeypatch.setenv("LLAMABERRY_HISTORY", "0")
    async with groq_engine(server) as engine:
        await engine.single("Capital of Italy?")
    assert not (tmp_path / "home").exists()


async def test_a_failed_run_keeps_its_finished_turns(server: FakeServer):
    server.enqueue(FIRST_TURN, Fault.status(401))
    async with groq_engine(server) as engine:
        with pytest.raises(RunFailedError):
            await engine.refine(QUESTION)
    with Store() as store:
        [run] = store.runs()
    assert run.status == "failed"
    assert run.error.startswith("Turn 2 failed")
    assert [t.answer for t in run.result.turns] == ["3"]
    assert run.calls[0].reply == FIRST_TURN


async def test_a_cancelled_run_is_saved_with_what_finished(server: FakeServer):
    server.enqueue(FIRST_TURN, Fault.hang())
    async with groq_engine(server) as engine:
        task = asyncio.create_task(engine.refine(QUESTION))
        while len(server.requests) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with Store() as store:
        [run] = store.runs()
    assert run.status == "cancelled"
    assert len(run.result.turns) == 1


async def test_no_api_key_in_the_database_file(server: FakeServer, tmp_path):
    server.reply_with(refine_script)
    async with groq_engine(server) as engine:
        await engine.refine(QUESTION, turns=1)
        # Even a key pasted into the question itself is blanked before it is stored.
        await engine.refine(f"Is {KEY} a valid key?", turns=1)
    server.reply_with(None)
    server.enqueue(Fault.status(401))
    async with groq_engine(server) as engine:
        with pytest.raises(RunFailedError):
            await engine.single(QUESTION)
    files = list((tmp_path / "home").iterdir())
    assert any(f.name == "history.db" for f in files)
    assert Store().count() == 3
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path.name


def test_concurrent_writers_from_two_processes_lose_nothing(tmp_path):
    path = tmp_path / "shared.db"
    script = (
        "import sys\n"
        "from llamaberry.core.results import Run\n"
        "from llamaberry.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "for i in range(150):\n"
        "    store.save(Run(mode='single', model='m', provider='groq', question=f'{sys.argv[2]} {i}'))\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("a", "b")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    with Store(path) as store:
        questions = {row.question for row in store.list_runs(limit=None)}
    assert questions == {f"{name} {i}" for name in "ab" for i in range(150)}


def test_the_database_is_in_wal_mode_at_the_latest_schema(tmp_path):
    store = Store(tmp_path / "h.db")
    store.save(make_run())
    db = sqlite3.connect(tmp_path / "h.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_an_old_database_is_migrated_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    create_runs(db)
    db.execute("PRAGMA user_version = 1")
    old = make_run(question="from version 1")
    data = old.model_dump_json()
    db.execute(
        "INSERT INTO runs (id, started_at, mode, model, provider, status, question, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (old.id, old.started_at.isoformat(), "single", "m1", "groq", "running", old.question, data),
    )
    db.close()
    with Store(path) as store:
        # Saved "running" by a process that is long gone: it reads back as interrupted.
        back = store.get(old.id)
        assert back == old.model_copy(update={"status": "interrupted", "error": INTERRUPTED})
        store.save(make_run(), eval_key="eval:abc")
        assert store.find_eval("eval:abc") is None  # only finished runs count for resume
        assert store.count() == 2


def test_listing_is_newest_first_and_filters_by_mode_model_and_text(tmp_path):
    store = Store(tmp_path / "h.db")
    oldest = make_run("single", "capital of France", minutes_ago=30, answer="Paris")
    middle = make_run("refine", "count the r in strawberry", minutes_ago=20, answer="3")
    newest = make_run("single", "is 9.11 > 9.9?", minutes_ago=10, answer="no")
    newest.model = "m2"
    for run in (middle, newest, oldest):
        store.save(run)
    assert [r.id for r in store.list_runs()] == [newest.id, middle.id, oldest.id]
    assert [r.id for r in store.list_runs(mode="single")] == [newest.id, oldest.id]
    assert [r.id for r in store.list_runs(model="m2")] == [newest.id]
    assert [r.id for r in store.list_runs(search="straw")] == [middle.id]
    assert [r.id for r in store.list_runs(search="paris")] == [oldest.id]  # answers too
    assert store.list_runs(search="100%") == []  # LIKE wildcards are taken literally
    assert [r.id for r in store.list_runs(limit=1)] == [newest.id]


def test_a_run_is_found_by_a_prefix_of_its_id(tmp_path):
    store = Store(tmp_path / "h.db")
    run = make_run()
    store.save(run)
    assert store.get(run.id[:6]) == run
    with pytest.raises(Exception, match="No run 'nope'"):
        store.get("nope")


def test_saving_again_updates_the_run(tmp_path):
    store = Store(tmp_path / "h.db")
    run = make_run()
    store.save(run)
    run.status, run.answer = "ok", "done"
    store.save(run, eval_key="eval:1")
    assert store.count() == 1
    assert store.get(run.id).answer == "done"
    assert store.find_eval("eval:1") == run


async def test_a_history_that_cannot_be_written_does_not_break_the_run(
    server: FakeServer, tmp_path, caplog
):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    server.enqueue("Paris.")
    async with groq_engine(server, history=Store(blocker / "history.db")) as engine:
        with caplog.at_level(logging.WARNING, logger="llamaberry"):
            run = await engine.single("Capital of France?")
    assert run.answer == "Paris."
    assert "not saved to history" in caplog.text


def test_markdown_shows_question_answer_and_each_turn(tmp_path):
    from llamaberry.core.results import Turn

    run = make_run("refine", "Why?", answer="Because.", status="ok")
    run.result.turns = [Turn(index=1, content="## Answer\nBecause.", answer="Because.")]
    text = run_markdown(run)
    assert text.startswith(f"# refine run {run.id}")
    assert text.index("## Question") < text.index("## Answer") < text.index("## Turn 1")
    assert "#### Answer" in text  # the model's heading sits below ours


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def saved(fake_server: FakeServer) -> dict[str, str]:
    """Two runs in the history, made through the CLI itself."""
    env = {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": fake_server.groq_base_url}
    fake_server.enqueue("Paris.")
    invoke(["ask", "Capital of France?", "--mode", "single"], env)
    fake_server.reply_with(refine_script)
    invoke(["ask", QUESTION, "--turns", "1"], env)
    return env


def invoke(args: list[str], env: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_history_lists_runs_newest_first(saved):
    out = invoke(["history"]).stdout
    assert out.index("How many times") < out.index("Capital of France?")
    filtered = invoke(["history", "--mode", "single"]).stdout
    assert "Capital of France?" in filtered and "strawberry" not in filtered
    rows = json.loads(invoke(["history", "--search", "france", "--json"]).stdout)
    assert [r["answer"] for r in rows] == ["Paris."]


def test_history_show_prints_the_run(saved):
    [row] = json.loads(invoke(["history", "--mode", "refine", "--json"]).stdout)
    out = invoke(["history", "show", row["id"][:8]]).stdout
    assert QUESTION in out and "## Turn 1" in out and "## Synthesis" in out
    whole = Run.model_validate_json(invoke(["history", "show", row["id"], "--json"]).stdout)
    assert whole.id == row["id"] and len(whole.calls) == 2


def test_history_show_of_an_unknown_id_is_one_line():
    result = CliRunner().invoke(cli, ["history", "show", "zzz"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: No run 'zzz'")


def test_history_export_jsonl_and_markdown(saved, tmp_path: Path):
    lines = invoke(["history", "export"]).stdout.splitlines()
    runs = [Run.model_validate_json(line) for line in lines]
    assert [r.mode for r in runs] == ["refine", "single"]
    target = tmp_path / "out.md"
    invoke(["history", "export", "--format", "md", "-o", str(target)])
    text = target.read_text()
    assert text.count("# refine run") == 1 and text.count("# single run") == 1
    assert KEY not in text and KEY not in "\n".join(lines)


# -- the History tab ---------------------------------------------------------------------------


def test_history_tab_rows_filter_and_reopen_a_run(tmp_path):
    from llamaberry_ui.history import HEADERS, history_rows, show_run

    store = Store(tmp_path / "h.db")
    older = make_run("single", "capital of France", minutes_ago=5, answer="Paris", status="ok")
    newer = make_run("refine", "letters in strawberry", answer="3", status="ok")
    store.save(older)
    store.save(newer)
    rows = history_rows(store)
    assert [r[0] for r in rows] == [newer.id, older.id]
    assert len(rows[0]) == len(HEADERS)
    assert [r[0] for r in history_rows(store, mode="single")] == [older.id]
    assert [r[0] for r in history_rows(store, search="straw")] == [newer.id]
    # As the page renders it: gradio's cleandoc drops the final newline, the sanitizer too.
    assert show_run(store, newer.id) == run_markdown(newer).rstrip("\n")
    assert show_run(store, "missing").startswith("**No run 'missing'")


def test_history_tab_builds_inside_a_page(tmp_path):
    gr = pytest.importorskip("gradio")
    from llamaberry_ui.history import build_history_tab

    store = Store(tmp_path / "h.db")
    store.save(make_run(question="saved before the page opened"))
    with gr.Blocks():
        parts = build_history_tab(store)
    assert parts["refresh"]("all", "")[0][-1] == "saved before the page opened"
