"""Eval under trouble: an unusable history, a provider that stops answering for an hour, two
evals of the same set at once, and commands that are wrong before anything is sent."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.eval import evaluate, load_dataset, report_markdown
from llamaberry.store import Store, default_path
from llamaberry.store import database as store_database
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply


def sums(count: int) -> list[dict[str, object]]:
    """`count` items 'What is i + i?' whose gold is 2i."""
    return [{"question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(count)]


def adder(request: RecordedRequest) -> Reply:
    """Answers 'What is i + i?' right."""
    return Reply(f"The answer is {2 * int(request.user.split()[2])}.")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in sums(6)))
    return path


def cli_env(server: FakeServer) -> dict[str, str]:
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": server.groq_base_url}


# -- #17.7: the history cannot be used ---------------------------------------------------------


def _directory(path: Path) -> None:
    path.mkdir(parents=True)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database, it only has a name like one\n" * 200)


@pytest.mark.parametrize("damage", [_directory, _corrupt], ids=["a directory", "corrupt"])
def test_an_unusable_history_is_one_line_and_the_eval_still_reports(
    fake_server: FakeServer, dataset: Path, tmp_path: Path, damage
):
    damage(default_path())
    fake_server.reply_with(adder)
    out = tmp_path / "out"
    args = ["eval", str(dataset), "--modes", "single", "--out", str(out)]
    result = CliRunner().invoke(cli, args, env=cli_env(fake_server))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: the history cannot be used")
    assert "cannot be resumed" in warnings[0]
    assert "| single | 100.0% |" in result.stdout
    assert (out / "results.jsonl").read_text().count("\n") == 6
    assert "cannot be resumed" in (out / "report.md").read_text()


async def test_a_history_locked_longer_than_the_store_waits_does_not_stop_the_eval(
    server: FakeServer, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(store_database, "OPEN_TIMEOUT", 0.3)  # the store's 10 s, shortened
    path = tmp_path / "locked.db"
    Store(path).count()  # a real, current database...
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # ...that another process keeps locked
    try:
        server.reply_with(adder)
        told: list[str] = []
        async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
            report = await evaluate(
                engine,
                load_dataset(dataset),
                ("single",),
                store=Store(path),
                on_warning=told.append,
            )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r.correct for r in report.results] == [True] * 6
    assert len(told) == 1 and "locked" in told[0]
    assert report.warnings == told


async def test_eval_honours_history_off(
    server: FakeServer, dataset: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LLAMABERRY_HISTORY", "0")
    server.reply_with(adder)
    async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
        report = await evaluate(engine, load_dataset(dataset), ("single",))
        again = await evaluate(engine, load_dataset(dataset), ("single",))
    assert not default_path().exists()
    assert report.succeeded == again.succeeded == 6
    assert len(server.requests) == 12  # nothing could be reused
    assert any("LLAMABERRY_HISTORY=0" in w for w in report.warnings)
    assert "cannot be resumed" in report_markdown(report)


# -- #17.9: nothing succeeded; a limit that resets in an hour ---------------------------------


def test_the_command_fails_when_no_run_succeeded(fake_server: FakeServer, dataset: Path, tmp_path):
    fake_server.reply_with(lambda request: Fault.status(400, {"error": {"message": "bad model"}}))
    args = ["eval", str(dataset), "--modes", "single", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args, env=cli_env(fake_server))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no run succeeded")
    assert (tmp_path / "out" / "report.md").exists()  # the report is still written


async def test_a_limit_that_resets_in_an_hour_stops_the_eval_sending(
    server: FakeServer, tmp_path: Path
):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in sums(40)))
    body = {"error": {"message": "Rate limit reached on requests per day (RPD): Limit 1000"}}
    calls = {"n": 0}

    def answer(request: RecordedRequest) -> Reply | Fault:
        calls["n"] += 1
        if calls["n"] <= 3:
            return adder(request)
        return Fault.status(429, body, headers={"retry-after": "3600"})

    server.reply_with(answer)
    async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
        report = await evaluate(engine, load_dataset(path), ("single",), concurrency=2)
    assert len(server.requests) <= 3 + 2  # the 429 itself, and at most what was in flight
    assert report.succeeded == 3
    assert report.stopped is not None and "requests per day" in report.stopped
    assert "resets in 59m" in report.stopped or "resets in 1h00m" in report.stopped
    skipped = [r for r in report.results if r.status == "skipped"]
    assert len(skipped) >= 40 - 5
    assert "Stopped early" in report_markdown(report)


def test_the_command_says_it_stopped_early_and_fails(fake_server: FakeServer, dataset, tmp_path):
    body = {"error": {"message": "Rate limit reached on tokens per day (TPD)"}}
    fake_server.reply_with(lambda r: Fault.status(429, body, headers={"retry-after": "7200"}))
    args = ["eval", str(dataset), "--modes", "single", "-c", "1", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, args, env=cli_env(fake_server))
    assert result.exit_code == 1
    assert len(fake_server.requests) == 1
    assert "error: stopped early: Rate limited on tokens per day" in result.stderr


# -- #17.10: two evals of the same set at once ---------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="claims are POSIX byte-range locks")
async def test_two_evals_of_the_same_set_at_once_pay_once(server: FakeServer, tmp_path: Path):
    path = tmp_path / "twelve.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in sums(12)))
    server.reply_with(lambda request: Reply(adder(request).text, latency=0.3))
    env = {**os.environ, **cli_env(server)}
    command = [
        sys.executable,
        "-m",
        "llamaberry",
        "eval",
        str(path),
        "--modes",
        "single",
        "-c",
        "3",
    ]
    first, second = [
        await asyncio.create_subprocess_exec(
            *command,
            "--out",
            str(tmp_path / name),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    outputs = await asyncio.wait_for(asyncio.gather(first.communicate(), second.communicate()), 120)
    assert first.returncode == second.returncode == 0, outputs
    assert sorted(r.user for r in server.requests) == sorted(str(i["question"]) for i in sums(12))
    for name in ("a", "b"):
        rows = (tmp_path / name / "results.jsonl").read_text().splitlines()
        assert [json.loads(row)["correct"] for row in rows] == [True] * 12


# -- #17.14: wrong before anything is sent -------------------------------------------------------


def test_concurrency_zero_is_an_error_before_any_progress_bar(fake_server, dataset: Path):
    result = CliRunner().invoke(
        cli, ["eval", str(dataset), "--concurrency", "0"], env=cli_env(fake_server)
    )
    assert result.exit_code == 2
    assert result.stderr == "error: --concurrency must be at least 1 (got 0).\n"
    assert fake_server.requests == []


def test_an_unwritable_out_is_found_before_the_eval_runs(fake_server, dataset: Path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    fake_server.reply_with(adder)
    args = ["eval", str(dataset), "--modes", "single", "--out", str(blocker / "report")]
    result = CliRunner().invoke(cli, args, env=cli_env(fake_server))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: Cannot write the report to {blocker / 'report'}")
    assert fake_server.requests == []


async def test_a_huge_concurrency_builds_one_sdk_client_and_no_connections_up_front(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("LLAMABERRY_CONCURRENCY", "10000")
    engine = Engine(api_key="k", base_url="http://127.0.0.1:9")
    await engine.client.ready()  # the SDK client is built in the background
    # One SDK client whose pool opens connections as calls need them, nothing per connection.
    assert engine.client.pools == 1
