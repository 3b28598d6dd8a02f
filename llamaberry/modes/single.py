"""The single mode: the question sent once with no scaffold, the baseline for comparisons."""

from __future__ import annotations

from collections.abc import AsyncIterator

from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import SingleReply, SingleResult
from llamaberry.modes import prompts
from llamaberry.run.runner import ModeSpec, RunContext, to_messages


class SingleOptions(Options):
    """The single mode has no options: it is the baseline."""


async def single(ctx: RunContext, options: SingleOptions | None = None) -> AsyncIterator:
    """Yield the events of a single-turn run; its one reply is both turn 1 and the answer."""
    messages = to_messages(prompts.single_messages(ctx.run.question))
    # The one call is the final one, and a caller's conversation goes out as it was sent.
    async for event in ctx.call("answer", 1, messages, final=True, as_sent=True):
        yield event
    reply = ctx.reply
    assert reply is not None
    result: SingleResult = ctx.result
    turn = SingleReply(index=1, answer=reply.text.strip(), **reply.result_fields())
    result.turns.append(turn)
    ctx.run.answer = turn.answer
    yield CallFinished(kind=turn.kind, index=turn.index, result=turn)


MODE = ModeSpec(
    name="single",
    description="The question asked once, with no scaffold: the baseline.",
    options=SingleOptions,
    run=single,
    result=SingleResult,
)
