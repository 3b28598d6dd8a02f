"""The history under bad rows, absurd flags and a full disk: one line, never a traceback, and
what it can still say it says."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, Run
from llamaberry.cli import cli
from llamaberry.store import Store, default_path
from llamaberry.testing import FakeServer, Reply

KEY = "gsk_history_hardening_51c0"


def make_run(question: str, minutes_ago: int) -> Run:
    started = datetime(2026, 5, 1, 12, 0, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    return Run(mode="single", model="m1", provider="groq", question=question, started_at=started)


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture
def spoiled() -> dict[str, str]:
    """A history of four runs: one whose JSON is cut short, one whose JSON has a field of the
    wrong type, one whose listed columns are wrong; and one good run."""
    runs = {
        name: make_run(name, minutes)
        for minutes, name in enumerate(["good", "cut", "typed", "cols"])
    }
    with Store() as store:
        for run in runs.values():
            store.save(run)
    db = sqlite3.connect(default_path(), isolation_level=None)
    db.execute("UPDATE runs SET data = substr(data, 1, 40) WHERE id = ?", (runs["cut"].id,))
    db.execute(
        "UPDATE runs SET data = json_set(data, '$.usage', 'lots') WHERE id = ?",
        (runs["typed"].id,),
    )
    db.execute(
        "UPDATE runs SET total_tokens = 'lots', seconds = 'slow' WHERE id = ?", (runs["cols"].id,)
    )
    db.close()
    return {name: run.id for name, run in runs.items()}


def test_a_malformed_row_is_skipped_with_one_line_naming_it_in_the_listing(spoiled):
    result = invoke(["history"])
    assert result.exit_code == 0
    assert "Traceback" not in result.output
    warnings = result.stderr.strip().splitlines()
    assert warnings == [
        f"warning: llamaberry: run {spoiled['cols']} in the history is unreadable; skipped."
    ]
    listed = result.stdout
    for name in ("good", "cut", "typed"):  # the listing reads columns, not the whole run
        assert spoiled[name] in listed
    assert spoiled["cols"] not in listed


def test_export_skips_each_malformed_row_with_a_line_and_goes_on(spoiled):
    result = invoke(["history", "export"])
    assert result.exit_code == 0
    exported = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert exported == [spoiled["good"], spoiled["cols"]]  # "cols" has a whole, valid run
    assert result.stderr.strip().splitlines() == [
        f"warning: llamaberry: run {spoiled['cut']} in the history is unreadable (not JSON); skipped.",
        f"warning: llamaberry: run {spoiled['typed']} in the history is unreadable "
        "(1 invalid field); skipped.",
    ]
    markdown = invoke(["history", "export", "--format", "md"])
    assert markdown.exit_code == 0 and markdown.stdout.count("# single run ") == 2


def test_show_of_a_malformed_row_is_one_error_line(spoiled):
    result = invoke(["history", "show", spoiled["cut"]])
    assert result.exit_code == 1
    assert result.stderr == f"error: run {spoiled['cut']} in the history is unreadable (not JSON)\n"
    assert invoke(["history", "show", spoiled["good"]]).exit_code == 0


def test_a_limit_past_any_integer_is_a_usage_error():
    result = invoke(["history", "--limit", "99999999999999999999"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--limit" in result.stderr and "99999999999999999999" in result.stderr
    with Store() as store:  # and a caller of the store itself gets no overflow either
        assert store.list_runs(limit=10**30) == []


async def test_with_the_disk_full_a_finished_run_is_not_left_running(server: FakeServer):
    # The history fills up after the run's first save: SQLite's page limit is the disk's size.
    server.enqueue(Reply("Paris. " + " ".join(f"w{i}" for i in range(3000)), latency=0.3))
    path = Path(default_path())
    history = Store(path)
    async with Engine(api_key=KEY, base_url=server.groq_base_url, history=history) as engine:
        stream = engine.stream("single", "Capital of France?")
        async for event in stream:
            if type(event).__name__ == "RunStarted":
                history.flush()
                # The limit is per connection: set on the store's own, the one that writes.
                pages = history._execute("PRAGMA page_count")[0][0]
                history._execute(f"PRAGMA max_page_count = {pages}")
        await history.aflush()
    with Store(path) as reader:
        (row,) = reader.list_runs()
        run = reader.get(row.id)
    assert row.status == "ok" and run.status == "ok"
