"""The drafts mode (a mixture of drafts): `drafts` independent answers written at once, at a
temperature above zero so they differ, then one synthesis call that is given the question and
every draft and answers in the same five sections as refine's synthesis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from llamaberry.core.errors import LlamaberryError
from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import Draft, DraftsResult
from llamaberry.modes import prompts
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

    async def draft(index: int) -> AsyncIterator:
        child = ctx.child()
        async for event in child.call("draft", index, messages, temperature=temperature):
            yield event
        reply = child.reply
        assert reply is not None
        done = Draft(index=index, **reply.result_fields())
        result.drafts.append(done)
        result.drafts.sort(key=lambda d: d.index)
        yield CallFinished(kind="draft", index=index, result=done)

    try:
        async for batch in merge({i: draft(i) for i in range(1, options.drafts + 1)}):
            for _, event in batch:
                yield event
    except LlamaberryError:
        _keep_a_draft(ctx, result)
        raise

    texts = [d.content for d in result.drafts]
    try:
        async for event in ctx.call(
            "synthesis",
            1,
            to_messages(prompts.drafts_synthesis_messages(question, texts)),
            final=True,
        ):
            yield event
    except LlamaberryError:
        _keep_a_draft(ctx, result)
        raise
    reply = ctx.reply
    assert reply is not None
    synthesis = synthesis_from(reply)
    result.synthesis = synthesis
    ctx.run.answer = synthesis.answer
    yield CallFinished(kind="synthesis", index=1, result=synthesis)


def _keep_a_draft(ctx: RunContext, result: DraftsResult) -> None:
    # A failed run keeps a whole draft as its partial answer rather than nothing.
    whole = [d for d in result.drafts if d.content.strip() and not d.truncated and not d.looped]
    if whole and ctx.run.answer is None:
        ctx.run.answer, ctx.run.partial = whole[0].content.strip(), True


MODE = ModeSpec(
    name="drafts",
    description="Several independent drafts at once, then a synthesis that merges them.",
    options=DraftsOptions,
    run=drafts,
    result=DraftsResult,
    default=False,
)
