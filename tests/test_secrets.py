"""The API key never appears in output, errors, logs, --json or anything written to disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError, RunFailedError
from llamaberry.cli import cli
from llamaberry.testing import FakeServer, Fault, RecordedRequest

from .conftest import refine_script

KEY = "gsk_SECRET_canary_0123456789abcdefXYZ"


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` whose bytes contain `needle` (databases and WAL files too)."""
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, the SDKs' and httpx's included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_the_key_is_absent_from_every_cli_surface(
    fake_server: FakeServer, tmp_path: Path, debug_logs, monkeypatch
):
    home = tmp_path / "home"
    env = {
        "GROQ_API_KEY": KEY,
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "LLAMABERRY_HOME": str(home),
    }
    fake_server.reply_with(refine_script)
    runner = CliRunner()
    outputs = [
        runner.invoke(cli, ["ask", "q", "--json"], env=env),
        runner.invoke(cli, ["ask", "q"], env=env),
        runner.invoke(cli, ["ask", "q", "--mode", "single", "--model", "nope"], env=env),
        runner.invoke(cli, ["models"], env=env),
    ]
    fake_server.reply_with(lambda request: Fault.status(401))
    outputs.append(runner.invoke(cli, ["ask", "q", "--mode", "single"], env=env))

    assert [r.exit_code for r in outputs] == [0, 0, 1, 0, 1]
    # The key did reach the server, so the check below is not vacuous.
    assert any(KEY in r.headers.get("authorization", "") for r in fake_server.requests)
    for result in outputs:
        assert KEY not in result.stdout and KEY not in result.stderr
    assert KEY not in debug_logs.text
    assert files_containing(home, KEY.encode()) == []


async def test_the_key_is_absent_from_runs_errors_and_reprs(server: FakeServer, debug_logs):
    finished = []
    server.reply_with(refine_script)
    async with Engine(api_key=KEY, base_url=server.groq_base_url, on_finish=finished.append) as e:
        run = await e.refine("q", turns=1)
        server.reply_with(lambda request: Fault.status(401))
        with pytest.raises(RunFailedError) as failure:
            await e.single("q")
        texts = [
            run.model_dump_json(),
            failure.value.run.model_dump_json(),
            str(failure.value),
            repr(e.settings),
            str(e.settings),
            repr(e.client),
        ]
    assert len(finished) == 2
    texts += [r.model_dump_json() for r in finished]
    for text in texts:
        assert KEY not in text
    assert KEY not in debug_logs.text


# -- a key the client really uses: from the environment, a URL, or typed into the question ----

ENV_KEY = "gsk_ENVIRONMENT_canary_9876543210zyxw"
URL_SECRET = "URLpass_canary_5555aaaa"


def echoing_key(request: RecordedRequest) -> Fault:
    """A server that quotes the key it was sent in its error, as real ones do."""
    sent = request.headers.get("authorization", "")
    message = f"Invalid API Key provided: {sent}"
    return Fault.status(400, body={"error": {"message": message, "type": "invalid_request"}})


def test_a_key_from_the_environment_echoed_by_the_server_never_leaves(
    fake_server: FakeServer, tmp_path: Path
):
    home = tmp_path / "home"
    env = {
        "GROQ_API_KEY": ENV_KEY,
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "LLAMABERRY_HOME": str(home),
        "LLAMABERRY_MAX_RETRIES": "0",
    }
    fake_server.reply_with(echoing_key)
    runner = CliRunner()
    asked = runner.invoke(
        cli, ["ask", f"is {ENV_KEY} valid?", "--mode", "single", "--json"], env=env
    )
    plain = runner.invoke(cli, ["ask", "q", "--mode", "single"], env=env)
    dataset = tmp_path / "set.jsonl"
    dataset.write_text(json.dumps({"question": "1 + 1?", "answer": 2}) + "\n")
    out = tmp_path / "out"
    evaluated = runner.invoke(
        cli, ["eval", str(dataset), "--modes", "single", "--out", str(out)], env=env
    )
    exported = runner.invoke(cli, ["history", "export"], env=env)
    exported_md = runner.invoke(cli, ["history", "export", "--format", "md"], env=env)
    listed = runner.invoke(cli, ["history", "--json"], env=env)

    # The server really did echo the key, so the checks below are not vacuous.
    assert any(ENV_KEY in r.headers.get("authorization", "") for r in fake_server.requests)
    assert asked.exit_code == 1 and plain.exit_code == 1
    assert "Invalid API Key provided" in asked.stderr
    assert "[redacted]" in asked.stdout  # the error in --json, and the question
    assert exported.stdout.count("\n") >= 3
    for result in (asked, plain, evaluated, exported, exported_md, listed):
        assert ENV_KEY not in result.stdout and ENV_KEY not in result.stderr
    assert files_containing(home, ENV_KEY.encode()) == []
    assert files_containing(out, ENV_KEY.encode()) == []
    # The question was blanked before it was sent, too.
    assert not any(ENV_KEY in json.dumps(r.messages) for r in fake_server.requests)


def test_credentials_in_the_base_url_are_never_printed_logged_or_stored(
    fake_server: FakeServer, tmp_path: Path, debug_logs
):
    home = tmp_path / "home"
    env = {
        "GROQ_API_KEY": ENV_KEY,
        "LLAMABERRY_HOME": str(home),
        "LLAMABERRY_MAX_RETRIES": "0",
    }
    fake_server.reply_with(lambda request: Fault.status(503))
    with_credentials = fake_server.groq_base_url.replace("://", f"://someone:{URL_SECRET}@")
    runner = CliRunner()
    results = [
        runner.invoke(
            cli, ["ask", "q", "--mode", "single", "--json", "--base-url", with_credentials], env=env
        ),
        runner.invoke(cli, ["history", "show", "--json", "x"], env=env),
        runner.invoke(cli, ["history", "export"], env=env),
    ]
    assert results[0].exit_code == 1
    assert "HTTP 503" in results[0].stderr
    assert "[redacted]@127.0.0.1" in results[0].stderr  # where it failed is still said
    for result in results:
        assert URL_SECRET not in result.stdout and URL_SECRET not in result.stderr
    assert files_containing(home, URL_SECRET.encode()) == []
    assert "HTTP Request: POST http://[redacted]@127.0.0.1" in debug_logs.text
    assert URL_SECRET not in debug_logs.text


def test_the_page_never_shows_a_key_the_client_uses(monkeypatch):
    from llamaberry_ui.views import RunView

    from llamaberry.core.events import CallStarted, RunStarted, TextDelta

    monkeypatch.setenv("GROQ_API_KEY", ENV_KEY)
    view = RunView()
    view.apply(RunStarted(run_id="r", mode="single", model="m", question="q"))
    view.apply(CallStarted(kind="answer", index=1))
    view.apply(TextDelta(kind="answer", index=1, text=f"your key is {ENV_KEY}"))
    view.answer = f"the key: {ENV_KEY}"
    view.fail(f"rejected {ENV_KEY}")
    shown = [json.dumps(view.messages()), view.answer_markdown(), view.error_markdown()]
    shown.append(view.live_markdown())
    for text in shown:
        assert ENV_KEY not in text
    assert "[redacted]" in view.error_markdown()


async def test_errors_and_runs_from_an_engine_never_hold_the_environment_key(
    server: FakeServer, monkeypatch
):
    monkeypatch.setenv("GROQ_API_KEY", ENV_KEY)
    server.reply_with(echoing_key)
    finished = []
    async with Engine(base_url=server.groq_base_url, on_finish=finished.append) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single(f"what is {ENV_KEY}?")
    error = failure.value
    texts = [str(error), repr(error), error.run.model_dump_json(), repr(error.args)]
    texts += [run.model_dump_json() for run in finished]
    assert "Invalid API Key provided" in str(error)
    for text in texts:
        assert ENV_KEY not in text


@pytest.mark.parametrize("pasted", [KEY + "\n", KEY + " ", " " + KEY, KEY[:10] + " " + KEY[10:]])
def test_a_key_with_stray_whitespace_is_named_at_once_and_nothing_is_sent(
    fake_server: FakeServer, pasted: str
):
    env = {"GROQ_API_KEY": pasted, "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(cli, ["ask", "q", "--mode", "single"], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: GROQ_API_KEY ")
    assert "newline" in result.stderr if pasted.endswith("\n") else "space" in result.stderr
    assert "Could not reach" not in result.stderr
    assert KEY not in result.stderr
    assert fake_server.requests == []


async def test_an_explicit_key_with_a_newline_fails_before_any_request(server: FakeServer):
    with pytest.raises(InputError, match="the API key ends with a newline"):
        Engine(api_key=KEY + "\n", base_url=server.groq_base_url)
    assert server.requests == []


# -- most of the key: less a character, cut short, one character changed -----------------------

FRAGMENT_KEY = "gsk_FakeFragmentKeyForTests_Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1H"  # made up


def runs_of_the_key(text: str) -> list[str]:
    """Every ten characters of FRAGMENT_KEY together (MIN_FRAGMENT) that `text` shows."""
    runs = (FRAGMENT_KEY[i : i + 10] for i in range(len(FRAGMENT_KEY) - 9))
    return [run for run in runs if run in text]


def echoing_most_of_the_key(request: RecordedRequest) -> Fault | str:
    """A server that quotes what is left of the key it was sent, in its error or its reply."""
    sent = request.headers.get("authorization", "").removeprefix("Bearer ")
    changed = sent[:28] + "#" + sent[29:]
    if "fail" in (request.user or ""):
        message = f"Invalid API Key provided: {sent[:-1]} (or {sent[1:]}; {changed})"
        return Fault.status(400, body={"error": {"message": message, "type": "invalid_request"}})
    return f"Your key starts {sent[:40]} and ends {sent[20:]}, nearly {changed}."


def test_most_of_the_key_echoed_by_the_server_never_leaves(fake_server: FakeServer, tmp_path):
    home = tmp_path / "home"
    env = {
        "GROQ_API_KEY": FRAGMENT_KEY,
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "LLAMABERRY_HOME": str(home),
        "LLAMABERRY_MAX_RETRIES": "0",
    }
    fake_server.reply_with(echoing_most_of_the_key)
    runner = CliRunner()
    results = [
        runner.invoke(cli, ["ask", "please fail", "--mode", "single"], env=env),
        runner.invoke(cli, ["ask", "please fail", "--mode", "single", "--json"], env=env),
        runner.invoke(cli, ["ask", "say it", "--mode", "single"], env=env),
        runner.invoke(cli, ["ask", "say it", "--mode", "single", "--json"], env=env),
        runner.invoke(cli, ["history", "--json"], env=env),
        runner.invoke(cli, ["history", "export"], env=env),
        runner.invoke(cli, ["history", "export", "--format", "md"], env=env),
    ]
    # The server really did echo most of the key, so the checks below are not vacuous.
    assert [r.exit_code for r in results] == [1, 1, 0, 0, 0, 0, 0]
    assert FRAGMENT_KEY in fake_server.requests[0].headers["authorization"]
    assert results[0].stderr.startswith("error:") and "Invalid API Key provided: [redacted]" in (
        results[0].stderr
    )
    assert "Your key starts [redacted] and ends [redacted], nearly [redacted]#[redacted]." in (
        results[2].stdout
    )
    assert json.loads(results[3].stdout)["answer"].startswith("Your key starts [redacted]")
    for result in results:
        assert runs_of_the_key(result.stdout + result.stderr) == [], result.output
    for run in runs_of_the_key(FRAGMENT_KEY):
        assert files_containing(home, run.encode()) == [], run
