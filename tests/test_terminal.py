"""What a hostile model's text can do to a terminal: nothing. Escape sequences and control
characters are shown inert (or not at all), a key the upstream echoes is redacted on screen as
it is in --json and the history, and --json and the history keep the text as it was written."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.core.redact import REDACTED, remember
from llamaberry.core.terminal import TerminalStream, for_terminal, strip_controls
from llamaberry.store import Store
from llamaberry.testing import FakeServer, Reply

from .pty_run import in_terminal

KEY = "gsk-hostile-terminal-4f19a0c2"
# What a reply can hold to take over a terminal: clear the screen and home the cursor, write
# the clipboard (OSC 52, both terminators), set the window title, hide text (SGR 8), the 8-bit
# CSI, a device control string, a bell, a NUL, backspaces over earlier text, and a lone \r that
# returns to the start of the line to print over it.
HOSTILE = (
    "\x1b[2J\x1b[Hcleared "
    "\x1b]52;c;cm0gLXJmIH4=\x07clip "
    "\x1b]52;c;ZWNobyBoaQ==\x1b\\clip2 "
    "\x1b]0;owned\x07title "
    "\x1b[8mconcealed\x1b[28m "
    "\x9b31mred "
    "\x1bP+q544e\x1b\\dcs "
    "bell\x07 nul\x00 back\x08\x08\x08 "
    "over\rwritten "
)
# Everything a terminal could act on, as raw bytes or as the 8-bit C1 forms.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(out: str) -> list[str]:
    return [
        w for w in ("cleared", "clip", "title", "concealed", "red", "dcs", "written") if w in out
    ]


@pytest.fixture
def env(fake_server: FakeServer) -> dict[str, str]:
    return {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": fake_server.groq_base_url}


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def hostile_reply(fake_server: FakeServer) -> None:
    fake_server.reply_with(None)
    fake_server.enqueue(
        Reply(f"{HOSTILE}the key is {KEY} ok\n\nAnswer: 42", reasoning=f"think {HOSTILE}{KEY}")
    )


def test_ask_shows_no_control_sequence_and_no_echoed_key(env, fake_server):
    hostile_reply(fake_server)
    result = invoke(["ask", "q", "--mode", "single"], env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert CONTROL.findall(out) == []
    assert KEY not in out and REDACTED in out
    # The words around the sequences are still there, in the stream and in the answer box.
    assert len(visible(out)) == 7
    assert out.count("the key is [redacted] ok") == 2
    assert "╭─ Answer" in out


def test_ask_json_and_the_history_keep_the_text_as_written(env, fake_server):
    hostile_reply(fake_server)
    result = invoke(["ask", "q", "--mode", "single", "--json"], env)
    data = json.loads(result.stdout)
    assert HOSTILE in data["answer"] and KEY not in data["answer"]
    with Store() as store:
        saved = store.get(data["id"])
    assert HOSTILE in (saved.answer or "")


def test_history_show_shows_no_control_sequence(env, fake_server):
    hostile_reply(fake_server)
    ran = json.loads(invoke(["ask", "q", "--mode", "single", "--json"], env).stdout)
    out = invoke(["history", "show", ran["id"]], env).stdout
    assert CONTROL.findall(out) == []
    assert len(visible(out)) == 7 and KEY not in out
    listed = invoke(["history"], env).stdout
    assert CONTROL.findall(listed) == []


def test_history_export_as_markdown_on_a_terminal_shows_no_control_sequence(env, fake_server):
    hostile_reply(fake_server)
    invoke(["ask", "q", "--mode", "single", "--json"], env)
    child_env = {**os.environ, **env}
    screen = in_terminal(["history", "export", "--format", "md"], child_env)
    assert screen.returncode == 0, screen.text
    assert CONTROL.findall(screen.raw.replace("\r\n", "\n")) == []
    assert len(visible(screen.raw)) == 7 and KEY not in screen.raw
    # Piped, the document keeps the answer as it was saved (less the key): a clipboard write
    # the terminal never saw is still there.
    piped = invoke(["history", "export", "--format", "md"], env).stdout
    assert "\x1b]52;c;cm0gLXJmIH4=\x07clip" in piped and KEY not in piped


def test_every_kind_of_sequence_is_taken_out_whole():
    assert strip_controls(HOSTILE) == (
        "cleared clip clip2 title concealed red dcs bell nul back over\nwritten "
    )
    assert strip_controls("a\tb\r\nc") == "a\tb\nc"
    # An OSC that never ends takes the rest of the text with it, as a terminal would.
    assert strip_controls("ok \x1b]52;c;Zm9v") == "ok "


def test_a_sequence_or_a_key_split_between_streamed_pieces_is_still_caught():
    remember(KEY)
    text = f"{HOSTILE}{KEY} end \x1b]52;c;eA==\x1b\\ done\r\n"
    whole = for_terminal(text)
    assert KEY not in whole and CONTROL.findall(whole) == []
    for size in (1, 2, 3, 5, 7, 11):
        stream = TerminalStream()
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
        assert shown == whole, size


def test_most_of_a_key_split_between_streamed_pieces_is_redacted_on_screen():
    remember(KEY)
    text = f"{HOSTILE}less one {KEY[:-1]}, less three {KEY[3:]}, and \x1b[2J{KEY[5:20]} end"
    whole = for_terminal(text)
    assert whole.count(REDACTED) == 3 and KEY[5:15] not in whole
    for size in (1, 2, 3, 5, 7, 11):
        stream = TerminalStream()
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
        assert shown == whole, size


def test_a_key_is_never_cut_where_another_key_could_begin():
    # The end of a piece that could begin a known key waits for the next piece; it must not
    # cut a whole key in two on the way (each half would then be shown unredacted). Here the
    # second key begins with the first one's last two characters.
    from llamaberry.core.redact import remember
    from llamaberry.core.terminal import TerminalStream

    first, second = "gsk-first-key-0a1b2c3dc2", "c2-second-key-9z8y7x6w"
    remember(first)
    remember(second)
    stream = TerminalStream()
    shown = stream.feed(f"a key: {first}") + stream.feed(" and more") + stream.flush()
    assert first not in shown and "gsk-first" not in shown
    assert shown == "a key: [redacted] and more"
