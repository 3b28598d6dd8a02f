"""The refine mode: N reasoning turns, each given the question and every earlier turn, then a
synthesis that merges them. The run's answer is the synthesis's concise answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from . import prompts
from .events import CallFinished
from .parsing import parse_synthesis, parse_turn
from .runner import RunContext, to_messages


async def refine(ctx: RunContext, turns: int) -> AsyncIterator:
    """Yield the events of a refine run with `turns` turns and a synthesis."""
    question = ctx.run.question
    texts: list[str] = []
    for index in range(1, turns + 1):
        pairs = (
            prompts.first_turn_messages(question)
            if index == 1
            else prompts.later_turn_messages(question, texts)
        )
        async for event in ctx.call("turn", index, to_messages(pairs)):
            yield event
        reply = ctx.reply
        assert reply is not None
        turn = parse_turn(
            index, reply.text, usage=reply.usage, seconds=reply.seconds, truncated=reply.truncated
        )
        ctx.run.turns.append(turn)
        texts.append(reply.text)
        yield CallFinished(kind="turn", index=index, result=turn)

    async for event in ctx.call(
        "synthesis", 1, to_messages(prompts.synthesis_messages(question, texts))
    ):
        yield event
    reply = ctx.reply
    assert reply is not None
    synthesis = parse_synthesis(
        reply.text, usage=reply.usage, seconds=reply.seconds, truncated=reply.truncated
    )
    ctx.run.synthesis = synthesis
    ctx.run.answer = synthesis.answer
    yield CallFinished(kind="synthesis", index=1, result=synthesis)
