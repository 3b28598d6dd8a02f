"""The single mode: the question sent once with no scaffold, the baseline for comparisons."""

from __future__ import annotations

from collections.abc import AsyncIterator

from . import prompts
from .events import CallFinished
from .results import Turn
from .runner import RunContext, to_messages


async def single(ctx: RunContext) -> AsyncIterator:
    """Yield the events of a single-turn run; its one reply is both turn 1 and the answer."""
    messages = to_messages(prompts.single_messages(ctx.run.question))
    async for event in ctx.call("answer", 1, messages):
        yield event
    reply = ctx.reply
    assert reply is not None
    turn = Turn(
        index=1,
        content=reply.text,
        answer=reply.text.strip(),
        thinking=reply.thinking,
        truncated=reply.truncated,
        cut_off_by=reply.cut_off_by,
        looped=reply.looped,
        usage=reply.usage,
        seconds=reply.seconds,
    )
    ctx.run.turns.append(turn)
    ctx.run.answer = turn.answer
    yield CallFinished(kind="answer", index=1, result=turn)
