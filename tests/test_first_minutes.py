"""What a person at a terminal sees, run in a pseudo-terminal: the first minutes on a fresh
machine with no key (the embedded model), and runs against the fake server."""

from __future__ import annotations

import itertools
import os

import pytest

from llamaberry.testing import FakeServer, RecordedRequest, Reply

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


def keyed(server: FakeServer) -> dict[str, str]:
    return {**no_key(), "GROQ_API_KEY": "test-key", "GROQ_BASE_URL": server.groq_base_url}


def words_of(k: int, count: int) -> list[str]:
    return [f"w{k}x{i}" for i in range(count)]


def concurrent_replies(answers: list[str]):
    """The k-th request to arrive (from 1) gets words w<k>x0... then `Answer: answers[k-1]`;
    the first streams slowly, so the others finish while it is still being written."""
    arrived = itertools.count(1)

    def reply(request: RecordedRequest) -> Reply:
        k = next(arrived)
        text = " ".join(words_of(k, 30)) + f"\n\nAnswer: {answers[k - 1]}"
        return Reply(text, chunk_delay=0.05 if k == 1 else 0.002)

    return reply


def assert_never_interleaved(text: str, samples: int, heading: str) -> None:
    """Each reply's words are one unbroken block on the screen, under its own heading."""
    lines = text.splitlines()
    for k in range(1, samples + 1):
        rows = [n for n, line in enumerate(lines) if f"w{k}x" in line]
        assert rows, f"reply {k} never shown"
        block = "\n".join(lines[rows[0] : rows[-1] + 1])
        assert " ".join(words_of(k, 30)) in " ".join(block.split()), block
        others = [f"w{j}x" for j in range(1, samples + 1) if j != k]
        assert not any(o in block for o in others), block
        assert heading not in block, block


@pytest.mark.parametrize("mode", ["vote", "drafts"])
def test_concurrent_replies_never_interleave_on_the_terminal(fake_server: FakeServer, mode):
    answers = ["2", "3", "2", "5", "3"]
    if mode == "drafts":
        fake_server.reply_with(None)
        replies = concurrent_replies(answers)
        fake_server.reply_with(
            lambda r: "## Concise Answer\n2" if "<draft" in (r.user or "") else replies(r)
        )
        args = ["ask", "q", "--mode", "drafts", "--drafts", "3"]
        count, heading = 3, "Draft "
    else:
        fake_server.reply_with(concurrent_replies(answers))
        args = ["ask", "q", "--mode", "vote", "--samples", "5"]
        count, heading = 5, "Sample "
    screen = in_terminal(args, keyed(fake_server))
    assert screen.returncode == 0, screen.text
    assert_never_interleaved(screen.text, count, heading)


def test_vote_shows_its_tally_and_agreement_under_the_answer(fake_server: FakeServer):
    fake_server.reply_with(concurrent_replies(["2", "3", "2", "5", "3"]))
    screen = in_terminal(["ask", "q", "--mode", "vote", "--samples", "5"], keyed(fake_server))
    assert screen.returncode == 0, screen.text
    after = screen.text[screen.text.index("Answer") :]
    tally = next(line for line in after.splitlines() if line.startswith("Votes:"))
    counts, _, rest = tally.removeprefix("Votes: ").partition(" · agreement ")
    assert sorted(counts.split(" · ")) == ["2 ×2", "3 ×2", "5 ×1"]  # most votes first
    assert counts.endswith("5 ×1") and rest.startswith("40% (2 of 5)")
    assert "a tie, won by the first answer to reach 2" in tally


@pytest.mark.real
def test_an_answer_of_the_demo_model_says_so_under_its_box():
    screen = in_terminal(
        ["ask", "What is 2 + 2?", "--mode", "single", "--max-tokens", "24"], no_key(), timeout=300
    )
    assert screen.returncode == 0, screen.text
    lines = screen.text.splitlines()
    bottom = max(n for n, line in enumerate(lines) if line.startswith("╰"))
    assert lines[bottom + 1] == (
        "a 135M demo model answered; set GROQ_API_KEY or --base-url for real answers"
    )
