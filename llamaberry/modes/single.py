"""The single mode: the question sent once with no scaffold, the baseline for comparisons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field

from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import ModeResult, Turn
from llamaberry.modes import prompts
from llamaberry.run.runner import ModeSpec, RunContext, to_messages


class SingleOptions(Options):
    """The single mode has no options: it is the baseline."""


class SingleResult(ModeResult):
    """The one reply, kept as turn 1 so it reads like refine's first turn."""

    mode: Literal["single"] = "single"
    turns: list[Turn] = Field(default_factory=list)

    def sections(self) -> list:
        """Nothing beyond the answer: the reply is the answer."""
        return []


async def single(ctx: RunContext, options: SingleOptions | None = None) -> AsyncIterator:
    """Yield the events of a single-turn run; its one reply is both turn 1 and the answer."""
    messages = to_messages(prompts.single_messages(ctx.run.question))
    async for event in ctx.call("answer", 1, messages):
        yield event
    reply = ctx.reply
    assert reply is not None
    turn = Turn(index=1, answer=reply.text.strip(), **reply.result_fields())
    ctx.run.turns.append(turn)
    ctx.run.answer = turn.answer
    yield CallFinished(kind="answer", index=1, result=turn)


MODE = ModeSpec(
    name="single",
    description="The question asked once, with no scaffold: the baseline.",
    options=SingleOptions,
    run=single,
    result=SingleResult,
)
