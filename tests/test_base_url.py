"""A malformed base URL is one readable line from every command, never an httpx traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError
from llamaberry.cli import cli

BAD_URLS = ["::::", "http://[::1", "garbage", "http://host:99999", "ftp://example.com", "http://"]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "1 + 1?", "answer": 2}\n')
    return path


def commands(dataset: Path, out: Path) -> list[list[str]]:
    return [
        ["ask", "q", "--mode", "single"],
        ["models"],
        ["compare", "q", "--modes", "single"],
        ["eval", str(dataset), "--modes", "single", "--out", str(out)],
        ["ui", "--port", "1"],
    ]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_base_url_option_is_one_line_from_every_command(url, dataset, tmp_path):
    for command in commands(dataset, tmp_path / "out"):
        result = CliRunner().invoke(cli, [*command, "--base-url", url], env={"GROQ_API_KEY": "k"})
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: Invalid base-url"), (command, result.stderr)
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.output and "httpx" not in result.output


@pytest.mark.parametrize("variable", ["GROQ_BASE_URL", "LLAMABERRY_BASE_URL"])
def test_garbage_in_a_base_url_variable_names_the_variable(variable, dataset, tmp_path):
    env = {"GROQ_API_KEY": "k", variable: "http://[::1"}
    for command in commands(dataset, tmp_path / "out"):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith(f"error: Invalid {variable}"), result.stderr
        assert "Traceback" not in result.output


def test_the_engine_refuses_a_bad_base_url_before_any_client_exists():
    with pytest.raises(InputError, match="not a usable URL"):
        Engine(api_key="k", base_url="::::")


def test_credentials_in_a_bad_url_are_not_shown():
    result = CliRunner().invoke(
        cli, ["models", "--base-url", "http://me:hunter2-secret@[::1"], env={"GROQ_API_KEY": "k"}
    )
    assert result.exit_code == 2
    assert "hunter2-secret" not in result.output
