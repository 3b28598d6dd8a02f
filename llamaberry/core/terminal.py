"""Model text made fit for a terminal: nothing in it can drive the terminal, no key is shown.

A reply is untrusted text. Written raw, its escape sequences clear the screen, hide text, move
the cursor over earlier lines, or write the clipboard (OSC 52). So before model text reaches a
terminal, every control sequence is taken out whole (CSI, OSC, DCS and the other string
sequences, two-byte escapes), then every other C0 and C1 control character but the newline and
the tab; a line end `\\r\\n` or a lone `\\r` becomes `\\n`. Known keys are redacted, as everywhere.

`--json` and the history keep the text as the model wrote it: this is only for what people read.
"""

from __future__ import annotations

import re

from llamaberry.core.redact import RedactStream, redact

# The byte that ends a two-byte escape; those that open CSI and string sequences excepted.
_ESCAPE_FINAL = r"[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]"
# ESC or its 8-bit form, then: CSI (parameters, intermediates, a final byte); a string sequence
# (OSC, DCS, SOS, PM, APC) up to its terminator BEL or ST, or to the end when it has none; any
# other escape (intermediates and one final byte).
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# What is left that a terminal could act on: C0 but \t and \n, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """`text` without control sequences or control characters; newlines and tabs kept."""
    if not text:
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def for_terminal(text: str) -> str:
    """`text` as it may be shown on a terminal: controls stripped, keys redacted."""
    return redact(strip_controls(text)) if text else text


class TerminalStream:
    """Streamed model text, cleaned for a terminal piece by piece.

    An escape sequence can be split between two pieces: the end of what was fed that could
    still become one is held back until the next piece (or `flush()`) shows what it was. What
    is left once the sequences are out goes through a `RedactStream`, which holds back in turn
    an end that could still become a key or a run of one (a key with a sequence inside it is
    caught too: it is whole once the sequence is out).
    """

    def __init__(self) -> None:
        self._pending = ""
        self._said = RedactStream()

    def feed(self, text: str) -> str:
        """What of everything fed so far can be shown now."""
        text = self._pending + text
        cut = len(text) - _unfinished(text)
        self._pending = text[cut:]
        return self._said.feed(strip_controls(text[:cut]))

    def flush(self) -> str:
        """The rest: the text has ended (or something else is about to be written)."""
        text, self._pending = self._pending, ""
        return self._said.feed(strip_controls(text)) + self._said.flush()


def _unfinished(text: str) -> int:
    """How many characters at the end of `text` could be the start of a sequence."""
    keep = 1 if text.endswith("\r") else 0  # perhaps the half of a \r\n
    start = max(text.rfind(c) for c in _INTRODUCERS)
    if start >= 0 and len(text) - start < _LONGEST and not _COMPLETE.match(text, start):
        keep = len(text) - start
    return keep


_INTRODUCERS = "\x1b\x9b\x9d\x90\x98\x9e\x9f"
# A sequence with its end: what _SEQUENCE takes out when nothing more is coming.
_COMPLETE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b(?:[\x20-\x2f]+[\x30-\x7e]|" + _ESCAPE_FINAL + ")"
)
# A sequence still open after this many characters is shown (stripped) rather than waited for.
_LONGEST = 4096
