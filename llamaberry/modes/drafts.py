"""The drafts mode (a mixture of drafts): `drafts` independent answers written at once, at a
temperature above zero so they differ, then one synthesis call that is given the question and
every draft and answers in the same five sections as refine's synthesis.

A small model may write our prompt back instead of answering. A draft that does has no answer
to fall back on; a synthesis that does (our instructions, our <draft> tags, drafts copied and
nothing of its own) gives way to the best draft's answer, and the run says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from llamaberry.core.errors import LlamaberryError
from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import Draft, DraftsResult
from llamaberry.modes import prompts
from llamaberry.modes.parsing import best_answer, instead_of_echo, ours, own_answer, read_echo
from llamaberry.modes.refine import synthesis_from
from llamaberry.run.merge import merge
from llamaberry.run.runner import ModeSpec, RunContext, to_messages

# The temperature drafts are written at when none was given: at 0 they would all be alike.
DRAFT_TEMPERATURE = 0.8


class DraftsOptions(Options):
    """How many drafts the synthesis is given."""

    drafts: int = Field(3, ge=1, le=10, description="Independent drafts before the synthesis.")


async def drafts(ctx: RunContext, options: DraftsOptions) -> AsyncIterator:
    """Yield the events of a drafts run: the drafts at once, then the synthesis."""
    result: DraftsResult = ctx.result
    question = ctx.run.question
    temperature = ctx.settings.temperature
    if temperature is None:
        temperature = DRAFT_TEMPERATURE
    messages = to_messages(prompts.draft_messages(question))
    instructions = ours(messages, [question])
    # Each draft's answer: its text, less our prompt where it wrote that back ('' if only that).
    answers: dict[int, str] = {}

    async def draft(index: int) -> AsyncIterator:
        child = ctx.child()
        async for event in child.call("draft", index, messages, temperature=temperature):
            yield event
        reply = child.reply
        assert reply is not None
        done = Draft(index=index, **reply.result_fields())
        answers[index] = own_answer(done.content, instructions, [question]).strip()
        result.drafts.append(done)
        result.drafts.sort(key=lambda d: d.index)
        yield CallFinished(kind="draft", index=index, result=done)

    try:
        async for batch in merge({i: draft(i) for i in range(1, options.drafts + 1)}):
            for _, event in batch:
                yield event
    except LlamaberryError:
        _keep_a_draft(ctx, result, answers)
        raise

    texts = [d.content for d in result.drafts]
    synthesis_messages = to_messages(prompts.drafts_synthesis_messages(question, texts))
    try:
        async for event in ctx.call("synthesis", 1, synthesis_messages, final=True):
            yield event
    except LlamaberryError:
        _keep_a_draft(ctx, result, answers)
        raise
    reply = ctx.reply
    assert reply is not None
    synthesis = synthesis_from(reply)
    result.synthesis = synthesis
    ctx.run.answer = synthesis.answer
    copied = [question, *texts]
    echo = read_echo(synthesis.answer, ours(synthesis_messages, copied), copied)
    if echo.echoed:  # our prompt or the drafts written back are not the run's answer
        ctx.run.answer, line = instead_of_echo(echo, _by_draft(result, answers), "draft")
        yield ctx.note("synthesis", 1, "fallback", line)
    yield CallFinished(kind="synthesis", index=1, result=synthesis)


def _by_draft(result: DraftsResult, answers: dict[int, str]) -> list[tuple[Draft, str]]:
    """Each draft with its answer, in the order they are numbered: the first whole one is the
    best (drafts are independent, so none is later or better informed than another)."""
    return [(d, answers.get(d.index, d.content.strip())) for d in result.drafts]


def _keep_a_draft(ctx: RunContext, result: DraftsResult, answers: dict[int, str]) -> None:
    # A failed run keeps a whole draft's answer as its partial answer rather than nothing.
    best = best_answer(_by_draft(result, answers))
    if best is not None and ctx.run.answer is None:
        ctx.run.answer, ctx.run.partial = best[1], True


MODE = ModeSpec(
    name="drafts",
    description="Several independent drafts at once, then a synthesis that merges them.",
    options=DraftsOptions,
    run=drafts,
    result=DraftsResult,
    default=False,
)
