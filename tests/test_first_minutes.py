"""What a person at a terminal sees, run in a pseudo-terminal: the first minutes on a fresh
machine with no key (the embedded model), and runs against the fake server."""

from __future__ import annotations

import os

import pytest

from .pty_run import in_terminal


def no_key() -> dict[str, str]:
    """The environment of a newcomer: no key, no endpoint, so the embedded model is chosen."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "OPENAI_", "LLAMABERRY_"))
    } | {"LLAMABERRY_HOME": os.environ["LLAMABERRY_HOME"]}


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["ask", ""], "error: The question is empty."),
        (
            ["ask", "q", "--turns", "11"],
            "error: turns must be a whole number from 1 to 10 (got 11).",
        ),
        (
            ["ask", "q", "--mode", "steps", "--min-steps", "30"],
            "error: min_steps (30) is larger than max_steps (25).",
        ),
        (
            ["compare", "q", "--turns", "11"],
            "error: turns must be a whole number from 1 to 10 (got 11).",
        ),
    ],
    ids=["empty", "turns", "min-steps", "compare"],
)
def test_a_usage_error_is_one_line_before_any_model_starts(args, line):
    # Without a key the embedded model would run; a usage error must not wait for it (nor
    # print its note): the one line is all there is.
    screen = in_terminal(args, no_key())
    assert screen.returncode == 2
    assert screen.text.strip() == line


def test_ask_help_shows_the_defaults_a_run_without_a_key_gets():
    screen = in_terminal(["ask", "--help"], no_key())
    text = " ".join(screen.text.split())  # click wraps the help at 80 columns
    assert "[default openai/gpt-oss-120b; SmolLM2-135M-Instruct without a key;" in text
    assert "[default 4096; 512 without a key; env LLAMABERRY_MAX_TOKENS]" in text
    assert "[default 120; 600 without a key; env LLAMABERRY_TIMEOUT]" in text
    assert "[default: (" not in text
