"""The refine mode: N reasoning turns, each given the question and every earlier turn, then a
synthesis that merges them. The run's answer is the synthesis's concise answer (or, when the
run fails late, the last good turn's, marked partial)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from . import prompts
from .errors import LlamaberryError
from .events import CallFinished
from .parsing import parse_synthesis, parse_turn
from .results import Turn
from .runner import RunContext, to_messages


async def refine(ctx: RunContext, turns: int) -> AsyncIterator:
    """Yield the events of a refine run with `turns` turns and a synthesis.

    When a later turn or the synthesis fails, the run keeps the last good turn's answer as
    its (partial) answer before the error ends it: four good turns are not thrown away
    because the fifth did not fit.
    """
    try:
        async for event in _refine(ctx, turns):
            yield event
    except LlamaberryError:
        if ctx.run.answer is None:
            fallback = best_turn_answer(ctx.run.turns)
            if fallback is not None:
                ctx.run.answer, ctx.run.partial = fallback, True
        raise


def best_turn_answer(turns: list[Turn]) -> str | None:
    """The answer of the last turn that finished whole (else of the last with any answer)."""
    usable = [turn for turn in turns if turn.answer.strip()]
    whole = [turn for turn in usable if not turn.truncated]
    chosen = whole or usable
    return chosen[-1].answer if chosen else None


async def _refine(ctx: RunContext, turns: int) -> AsyncIterator:
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
