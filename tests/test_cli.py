"""The command line: streaming output, --json, stdin, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.testing import FakeServer

from .conftest import FIRST_TURN, question_of, refine_script


@pytest.fixture
def env(fake_server: FakeServer) -> dict[str, str]:
    """Environment that points the CLI at the thread-mode fake server."""
    fake_server.reply_with(refine_script)
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}


def invoke(args: list[str], env: dict[str, str], input: bytes | str | None = None):
    return CliRunner().invoke(cli, args, env=env, input=input, catch_exceptions=False)


def test_ask_json_prints_exactly_one_object_with_the_documented_shape(env):
    result = invoke(["ask", "How many r in strawberry?", "--json"], env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"mode", "model", "question", "answer", "result", "usage", "seconds"} <= set(data)
    assert data["mode"] == "refine"
    # The mode's own part of the run, tagged with the mode (one schema for --json and history).
    assert data["result"]["mode"] == "refine"
    assert {"turns", "synthesis"} <= set(data["result"])
    assert data["model"] == "openai/gpt-oss-120b"
    assert data["answer"] == 'There are 3 r\'s in "strawberry".'
    turns, synthesis = data["result"]["turns"], data["result"]["synthesis"]
    assert [t["index"] for t in turns] == [1, 2, 3]
    for turn in turns:
        assert {"index", "content", "answer", "usage", "seconds"} <= set(turn)
    assert {"content", "answer", "usage", "seconds"} <= set(synthesis)
    assert set(data["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "reasoning_tokens",
        "cached_tokens",
    }
    assert (
        data["usage"]["total_tokens"]
        == sum(t["usage"]["total_tokens"] for t in turns) + synthesis["usage"]["total_tokens"]
    )


def test_ask_shows_each_turn_and_the_answer_set_apart(env):
    result = invoke(["ask", "How many r in strawberry?", "--turns", "2"], env)
    assert result.exit_code == 0
    out = result.stdout
    answer_box = out.index("╭─ Answer")
    assert out.index("Turn 1") < out.index("Turn 2") < out.index("Synthesis") < answer_box
    assert 'There are 3 r\'s in "strawberry".' in out[answer_box:]
    assert FIRST_TURN.splitlines()[1] in out
    assert "tokens" in out


def test_ask_single_mode(env, fake_server: FakeServer):
    fake_server.reply_with(None)
    fake_server.enqueue("Paris.")
    result = invoke(["ask", "Capital of France?", "--mode", "single", "--json"], env)
    assert json.loads(result.stdout)["answer"] == "Paris."
    assert len(fake_server.requests) == 1


def test_dash_reads_the_question_from_stdin(env, fake_server: FakeServer):
    result = invoke(["ask", "-", "--turns", "1", "--json"], env, input="Is 0.9 > 0.11?\n")
    assert result.exit_code == 0
    assert question_of(fake_server.requests[0]) == "Is 0.9 > 0.11?"


def test_undecodable_stdin_is_a_usage_error(env, fake_server: FakeServer):
    result = invoke(["ask", "-"], env, input=b"caf\xe9 \xff")
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr
    assert fake_server.requests == []


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_an_empty_question_is_a_usage_error_and_sends_nothing(env, fake_server, question):
    result = invoke(["ask", question], env)
    assert result.exit_code == 2
    assert "empty" in result.stderr
    assert fake_server.requests == []


@pytest.mark.parametrize("turns", ["0", "11"])
def test_turns_outside_one_to_ten_is_a_usage_error(env, fake_server, turns):
    result = invoke(["ask", "q", "--turns", turns], env)
    assert result.exit_code == 2
    assert "1 to 10" in result.stderr
    assert fake_server.requests == []


def test_missing_key_names_the_variable_and_sends_nothing(fake_server: FakeServer):
    result = invoke(["ask", "q"], {"GROQ_BASE_URL": fake_server.groq_base_url})
    assert result.exit_code == 1
    assert "GROQ_API_KEY" in result.stderr
    assert "--provider openai" in result.stderr
    assert fake_server.requests == []


def test_unknown_model_names_it_and_lists_the_available_ones(env):
    result = invoke(["ask", "q", "--model", "no-such-model"], env)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "no-such-model" in line
    assert "openai/gpt-oss-120b" in line and "llama-3.1-8b-instant" in line
    assert len(line.splitlines()) == 1


def test_retired_model_is_called_retired(env):
    result = invoke(["ask", "q", "--model", "llama-3.3-70b-versatile"], env)
    assert result.exit_code == 1
    assert "llama-3.3-70b-versatile" in result.stderr and "retired" in result.stderr


def test_models_lists_the_endpoint_models_and_stars_the_configured_one(env):
    result = invoke(["models"], env)
    assert result.exit_code == 0
    assert "* openai/gpt-oss-120b" in result.stdout
    assert "  qwen/qwen3.6-27b" in result.stdout


def test_openai_provider_needs_no_key(fake_server: FakeServer):
    fake_server.enqueue("42")
    env = {"LLAMABERRY_PROVIDER": "openai", "LLAMABERRY_BASE_URL": fake_server.openai_base_url}
    result = invoke(["ask", "q", "--mode", "single", "--json"], env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == "42"
    assert fake_server.requests[0].provider == "openai"


def test_a_failed_run_prints_its_partial_json_and_exits_one(env, fake_server: FakeServer):
    from llamaberry.testing import Fault

    fake_server.reply_with(None)
    fake_server.enqueue(FIRST_TURN, Fault.status(400, {"error": {"message": "bad request"}}))
    result = invoke(["ask", "q", "--json"], env)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed"
    assert [t["index"] for t in data["result"]["turns"]] == [1]
    assert "Turn 2 failed" in result.stderr


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # Settings from the environment are dropped, but not the test's own home: the process
    # must save its history there, not in the real one.
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GROQ_", "LLAMABERRY_")) or k == "LLAMABERRY_HOME"
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "llamaberry", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_real_process_errors_are_one_line_without_traceback(fake_server: FakeServer):
    result = _run_cli(["ask", "q"], {"GROQ_BASE_URL": fake_server.groq_base_url})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: No API key")


def test_real_process_streams_and_exits_zero(env):
    result = _run_cli(["ask", "q", "--turns", "1"], env)
    assert result.returncode == 0, result.stderr
    assert "Synthesis" in result.stdout


def test_help_does_not_import_gradio_or_the_sdks():
    code = (
        "import sys; from llamaberry.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('gradio', 'groq', 'openai', 'httpx2', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_help_is_quick_enough_to_feel_instant():
    # A generous bound against accidental heavy imports; the benchmark reports real figures.
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llamaberry", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3.0


def test_a_run_records_the_endpoint_named_by_the_sdk_variable(env):
    result = invoke(["ask", "q", "--mode", "single", "--json"], env)
    assert json.loads(result.stdout)["settings"]["base_url"] == env["GROQ_BASE_URL"]


def test_long_answers_are_clipped_in_tables_only():
    from llamaberry.cli import clip

    assert clip("short answer") == "short answer"
    long = "\n".join(f"line {i}" for i in range(20))
    assert clip(long) == "\n".join(f"line {i}" for i in range(8)) + " …"
    assert clip("x" * 700).endswith("x …") and len(clip("x" * 700)) == 602


def test_openai_without_a_base_url_or_key_says_it_would_reach_openai_and_sends_nothing(
    fake_server: FakeServer,
):
    result = invoke(["ask", "q", "--provider", "openai"], {})
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "OpenAI's own API" in result.stderr and "--base-url" in result.stderr
    assert fake_server.requests == []


def test_openai_with_a_key_but_no_base_url_says_it_targets_openai_itself():
    # The engine is built and its one call cannot reach OpenAI from here: stopped by the
    # call's one-second bound.
    result = invoke(
        ["ask", "q", "--provider", "openai", "--timeout", "1"], {"OPENAI_API_KEY": "sk-test"}
    )
    assert result.exit_code == 1
    assert "note: no --base-url, so this uses OpenAI's own API (https://api.openai.com/v1)" in (
        result.stderr
    )
    assert "sk-test" not in result.output


def test_openai_with_a_base_url_prints_no_note(fake_server: FakeServer):
    fake_server.enqueue("42")
    result = invoke(
        ["ask", "q", "--mode", "single", "--provider", "openai"],
        {"OPENAI_BASE_URL": fake_server.openai_base_url},
    )
    assert result.exit_code == 0
    assert "note:" not in result.stderr


# Today's endpoint flags, pinned: they are built from `Settings`, so a renamed field would
# rename a flag users type.
ENDPOINT_FLAGS = [
    "-m, --model",
    "--provider",
    "--base-url",
    "--temperature",
    "--max-tokens",
    "--reasoning-effort",
    "--timeout",
    "--run-timeout",
    "--rpm",
    "--tpm",
    "--context",
    "--loop-guard / --no-loop-guard",
]


@pytest.mark.parametrize("command", ["ask", "compare", "eval", "models", "ui", "serve"])
def test_every_endpoint_command_has_the_declared_flags_each_naming_its_variable(command):
    from llamaberry.core.settings import ENVIRONMENT, FLAG_SETTINGS

    shown = " ".join(
        CliRunner().invoke(cli, [command, "--help"], terminal_width=400).output.split()
    )
    for flag in ENDPOINT_FLAGS:
        assert flag in shown, flag
    for name in FLAG_SETTINGS:
        assert f"env {ENVIRONMENT[name]}]" in shown, name


def test_an_endpoint_flag_wins_over_its_variable(env):
    env = {**env, "LLAMABERRY_MAX_TOKENS": "7"}
    result = invoke(["ask", "q", "--mode", "single", "--json", "--max-tokens", "123"], env)
    assert json.loads(result.stdout)["settings"]["max_tokens"] == 123
    result = invoke(["ask", "q", "--mode", "single", "--json"], env)
    assert json.loads(result.stdout)["settings"]["max_tokens"] == 7


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts_keep_a_server_to_this_machine(host, loopback):
    from llamaberry.cli.options import is_loopback

    assert is_loopback(host) is loopback
