"""The terminal as a person sees it: `llamaberry ask` run in a real pseudo-terminal of a given
width, its output read back with the escape codes stripped."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from rich.cells import cell_len

from llamaberry.testing import FakeServer

# CSI sequences (colours, cursor) and OSC sequences (hyperlinks, titles).
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

LONG_ANSWER = (
    "The train leaves at 9:40 and covers the 210 km at an average of 84 km/h, so it arrives "
    "two and a half hours later, at 12:10; "
    + " ".join(f"filler{i}" for i in range(60))
    + " and the very last words of the answer are these."
)


def run_in_terminal(args: list[str], env: dict[str, str], columns: int) -> str:
    """Run the CLI attached to a pseudo-terminal `columns` wide; return what it printed."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    full_env.pop("COLUMNS", None)  # the width must come from the terminal itself
    full_env.update(env, TERM="xterm-256color", LLAMABERRY_HISTORY="0")
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaberry", *args],
        stdin=child,
        stdout=child,
        stderr=child,
        env=full_env,
        close_fds=True,
    )
    os.close(child)
    output = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child side closed
                break
            if not data:
                break
            output += data
    finally:
        os.close(main)
        process.wait(timeout=30)
    return output.decode("utf-8", "replace").replace("\r\n", "\n")


def screen_lines(output: str) -> list[str]:
    """The printed lines as the terminal shows them, without colours."""
    return _ESCAPES.sub("", output).split("\n")


def answer_box(lines: list[str]) -> list[str]:
    """The lines of the final answer box, borders included."""
    top = next(i for i, line in enumerate(lines) if line.startswith("╭─ Answer"))
    bottom = next(i for i in range(top, len(lines)) if lines[i].startswith("╰"))
    return lines[top : bottom + 1]


def box_text(box: list[str]) -> str:
    """The text inside the box, its lines joined by single spaces."""
    inner = [line[1:-1].strip() for line in box[1:-1]]
    return " ".join(part for part in inner if part)


@pytest.fixture
def env(fake_server: FakeServer) -> dict[str, str]:
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_a_long_answer_wraps_inside_its_box_at_every_width(env, fake_server, columns):
    fake_server.enqueue(LONG_ANSWER)
    output = run_in_terminal(["ask", "When does it arrive?", "--mode", "single"], env, columns)
    box = answer_box(screen_lines(output))
    for line in box[1:-1]:
        assert line.startswith("│") and line.endswith("│"), line
        assert cell_len(line) == columns
    assert box_text(box) == LONG_ANSWER


@pytest.mark.parametrize(
    "answer",
    [
        "<response>\nThe answer is 42.\n</response>",
        "<b>42</b> is [bold]the[/bold] answer, not [red]41[/]; see *notes* and `code`.",
    ],
)
def test_the_answer_box_shows_the_model_text_literally(env, fake_server, answer):
    fake_server.enqueue(answer)
    output = run_in_terminal(["ask", "q", "--mode", "single"], env, 80)
    box = answer_box(screen_lines(output))
    assert box_text(box) == " ".join(line.strip() for line in answer.splitlines())


def test_a_long_synthesis_answer_wraps_inside_its_box(env, fake_server):
    from .conftest import FIRST_TURN, SYNTHESIS

    synthesis = SYNTHESIS.replace('There are 3 r\'s in "strawberry".', LONG_ANSWER)
    fake_server.enqueue(FIRST_TURN, synthesis)
    output = run_in_terminal(["ask", "q", "--turns", "1"], env, 80)
    box = answer_box(screen_lines(output))
    assert all(cell_len(line) == 80 for line in box), output
    assert box_text(box) == LONG_ANSWER


def test_a_reply_that_ends_like_the_start_of_a_known_key_is_shown_whole():
    # The end of a streamed piece that could begin a key waits for the next piece; when the
    # run ends it is written as it is, not held back again and lost.
    import io

    from rich.console import Console

    from llamaberry.cli.render import TerminalView
    from llamaberry.core.events import TextDelta
    from llamaberry.core.redact import remember

    remember("tk-9a8b7c6d5e4f3a2b1c0d")
    out = io.StringIO()
    view = TerminalView(console=Console(file=out, force_terminal=True, color_system="standard"))
    view.show(TextDelta(kind="turn", index=1, text="the answer is at"))
    view._flush()  # as when the run ends
    assert out.getvalue().endswith("the answer is at")
