"""One call's output at a time: what keeps concurrent replies from interleaving on a screen or
in a streamed reply.

Several calls of a run can stream at once (a vote's samples, drafts). A consumer that shows
their text in one place lets the first call stream live and holds back every call that starts
while it streams; a held call goes out whole, under its own heading, when it finishes. The
terminal view (`cli/render.py`) and the OpenAI-compatible server (`serve`) both use this.
"""

from __future__ import annotations

from typing import Any

# A call of a run, as events name it: (kind, index).
Call = tuple[str, int]


class HoldBack:
    """Which call streams live, and what the calls held back have sent so far."""

    def __init__(self) -> None:
        self.live: Call | None = None
        self._held: dict[Call, list[Any]] = {}

    def start(self, call: Call) -> bool:
        """A call started: True when it streams live, False when it is held back (another
        call is streaming)."""
        if self.live is not None:
            self._held[call] = []
            return False
        self.live = call
        return True

    def hold(self, event: Any) -> bool:
        """Keep `event` (one with `kind` and `index`) when its call is held back: True then,
        False when the event goes out now."""
        kept = self._held.get((event.kind, event.index))
        if kept is None:
            return False
        kept.append(event)
        return True

    def claim(self, call: Call) -> bool:
        """A call that streams without having been announced: it goes live if no other call
        is; True when it is the live call."""
        if self.live is None and call not in self._held:
            self.live = call
        return self.live == call

    def finish(self, call: Call) -> list[Any] | None:
        """A call finished: it stops being live; what was held of it, in order (None when it
        was not held back)."""
        if self.live == call:
            self.live = None
        return self._held.pop(call, None)
