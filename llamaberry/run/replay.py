"""Calls an earlier run already paid for, answered again without asking the model.

A run stopped part way (Ctrl-C during an eval) keeps the calls that finished. When the same
question goes through the same mode with the same settings again, each call it makes is sent
exactly as before until the point where the earlier run stopped: a call whose kind, index and
messages match a finished call of the earlier run gets that call's reply back, played as a
stream (its thinking, its text, then the completion with what it cost), and nothing is sent.
So a refine run that had finished two turns resumes at turn three. The first call that differs
(or was not finished) goes to the model, and so does every call after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from llamaberry.core.results import Call, Message, Run
from llamaberry.providers.base import Completion, Delta, StreamItem, Thinking


class Replay:
    """The finished calls of an earlier run, each to be answered once."""

    def __init__(self, calls: list[Call]) -> None:
        # Only calls that ended as the model meant them to: no error, no loop cut, no
        # early close (their replies are partial, or depend on the guard that cut them).
        self._calls = [
            call
            for call in calls
            if call.error is None
            and call.finish_reason is not None
            and not call.looped
            and not call.closed_early
        ]
        self.used = 0

    def __bool__(self) -> bool:
        """True while a finished call is left to give."""
        return bool(self._calls)

    @classmethod
    def of(cls, run: Run | None) -> Replay | None:
        """The replay of `run`'s finished calls, or None when it has none."""
        replay = cls(run.calls) if run is not None else None
        return replay if replay else None

    def take(self, kind: str, index: int, messages: list[Message]) -> Call | None:
        """The finished call sent exactly so, if there is one (each is given once)."""
        for number, call in enumerate(self._calls):
            if call.kind == kind and call.index == index and call.messages == messages:
                del self._calls[number]
                self.used += 1
                return call
        return None


async def played(call: Call) -> AsyncIterator[StreamItem]:
    """`call`'s reply as the stream a client would have sent."""
    if call.thinking:
        yield Thinking(call.thinking)
    if call.reply:
        yield Delta(call.reply)
    yield Completion(
        text=call.reply,
        finish_reason=call.finish_reason,
        usage=call.usage,
        seconds=call.seconds,
        attempts=call.attempts,
        thinking=call.thinking,
        response_format=call.response_format,  # type: ignore[arg-type]
        tool_calls=list(call.tool_calls),
    )
