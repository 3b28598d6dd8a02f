"""The loop guard: notices a reply that has fallen into repeating itself.

Small and quantized models (and sometimes large ones) can get stuck writing the same line or
paragraph until their token budget runs out. The guard watches the text as it streams and
says so once the end of the reply is the same piece of text repeated back to back, enough
times and over enough characters that legitimate repetition does not qualify.

Only exact, consecutive repetition counts. A table's rows, a numbered list, or code with many
similar lines differ somewhere (a number, a name, a cell), so they never make the end of the
reply periodic; a closing brace or a separator line repeated a few times is far below the
length the guard needs. Because it works on characters, not lines, it also catches a loop
inside a JSON string, where the model's newlines arrive as the two characters `\\n`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The repeated span must be at least this long, whatever the unit...
MIN_SPAN = 600
# ...and hold at least this many copies of it.
MIN_REPEATS = 4
# The longest unit looked for: a paragraph.
MAX_UNIT = 1500
# Where the next copy of the reply's last characters is looked for.
_PROBE = 24
# How often (in new characters) the end of the reply is examined.
_EVERY = 32
# Candidate units tried per examination (the nearest earlier copies of the probe).
_CANDIDATES = 4


@dataclass(frozen=True)
class Loop:
    """A loop found at the end of a reply."""

    unit: str  # the repeated piece of text
    start: int  # where the repetition begins
    repeats: int  # whole copies of `unit` from `start` to the end
    kept: int  # how much of the reply to keep: everything before the loop and one copy of it


def find_loop(text: str) -> Loop | None:
    """The loop the end of `text` is stuck in, or None when it is not clearly looping."""
    if len(text) < MIN_SPAN:
        return None
    probe = text[-_PROBE:]
    if not probe.strip():
        return None  # trailing whitespace is not a loop worth stopping for
    tail = len(text) - _PROBE
    window_start = max(0, tail - MAX_UNIT)
    bound = len(text) - 1  # an earlier copy must begin before the probe itself does
    for _ in range(_CANDIDATES):
        at = text.rfind(probe, window_start, bound)
        if at < 0:
            return None
        loop = _periodic_tail(text, tail - at)
        if loop is not None:
            return loop
        bound = at + _PROBE - 1
    return None


def _periodic_tail(text: str, unit: int) -> Loop | None:
    """The loop if the end of `text` repeats with period `unit` long enough to count."""
    need = max(MIN_SPAN, MIN_REPEATS * unit)
    if need + unit > len(text):
        return None
    # The last `need + unit` characters have period `unit` iff these two slices are equal.
    if text[-need:] != text[-need - unit : -unit]:
        return None
    piece = text[-unit:]
    if not piece.strip():
        return None
    # Walk back to where the repetition begins: whole units first, then character by character.
    start = len(text) - need - unit
    while start >= unit and text[start - unit : start] == text[start : start + unit]:
        start -= unit
    while start > 0 and text[start - 1] == text[start - 1 + unit]:
        start -= 1
    # One copy, ending where the repeated piece naturally ends (a line break, else a sentence
    # or a word), rather than at whatever character the repetition happened to begin with.
    first = text[start : start + 2 * unit]
    kept = start + unit
    for ends in ("\n", ".!?", " "):
        at = next((k for k in range(unit) if first[unit + k - 1] in ends), None)
        if at is not None:
            kept += at
            break
    return Loop(
        unit=text[start : start + unit],
        start=start,
        repeats=(len(text) - start) // unit,
        kept=kept,
    )


class LoopGuard:
    """Feed it a reply's text as it streams; `check()` says when the reply is looping."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._checked_at = 0
        self.loop: Loop | None = None

    def feed(self, text: str) -> Loop | None:
        """Add streamed text; return the loop once the reply is clearly stuck in one."""
        self._parts.append(text)
        self._length += len(text)
        if self.loop is None and self._length - self._checked_at >= _EVERY:
            self._checked_at = self._length
            # Shorter text holds no loop (see `find_loop`), so it is not joined to look.
            if self._length >= MIN_SPAN:
                joined = "".join(self._parts)
                self._parts = [joined]
                self.loop = find_loop(joined)
        return self.loop

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return "".join(self._parts)
