"""The API key never appears in output, errors, logs, --json or anything written to disk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, RunFailedError
from llamaberry.cli import cli
from llamaberry.testing import FakeServer, Fault

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
