"""The vote mode (self-consistency): the question answered `samples` times independently, all
at once, each sample ending on an `Answer:` line; the answers are read and normalised with
the scorer's rules (a number, a choice letter or yes/no, else the text) and the most common
one wins.

Tie rule: when answers share the top count, the one that reached that count first wins,
counting the samples in the order they finished (so with one vote each, the answer of the
earliest-finishing sample). The agreement ratio is the winner's count over the samples that
gave a readable answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from llamaberry.core import scoring
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import Sample, VoteResult
from llamaberry.modes import prompts
from llamaberry.run.merge import merge
from llamaberry.run.runner import ModeSpec, RunContext, to_messages

# The temperature samples are drawn at when none was given: at 0 they would all be alike.
SAMPLE_TEMPERATURE = 0.8


class VoteOptions(Options):
    """How many independent answers are drawn and voted on."""

    samples: int = Field(5, ge=1, le=20, description="Independent answers voted on (vote).")


def read_answer(text: str) -> tuple[str, str] | None:
    """The answer a sample gives, as (shown, key): numbers compare by value (42 == 42.0 ==
    forty-two), choices by letter or yes/no, anything else by its normalised text."""
    segment = scoring.final_segment(text).strip()
    if not segment:
        return None
    number = scoring.read_number(segment)
    if number is not None:
        value, written = number
        return written, f"number:{value}"
    # A choice only from a short answer: a sentence that happens to contain "no" is text.
    if len(scoring.normalize(segment).split()) <= 3:
        choice = scoring.read_choice(segment)
        if choice is not None:
            return choice, f"choice:{choice}"
    text_key = scoring.normalize(segment)
    return (segment, f"text:{text_key}") if text_key else None


def tally(samples: list[Sample]) -> tuple[dict[str, int], str | None, float | None]:
    """The votes, the winner and the agreement, from samples in the order they finished."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    # When each answer reached each count, by finishing position: the tie rule.
    reached: dict[tuple[str, int], int] = {}
    for position, sample in enumerate(sorted(samples, key=lambda s: s.finished)):
        if sample.key is None or sample.answer is None:
            continue
        counts[sample.key] = counts.get(sample.key, 0) + 1
        shown.setdefault(sample.key, sample.answer)
        reached[(sample.key, counts[sample.key])] = position
    if not counts:
        return {}, None, None
    top = max(counts.values())
    best = min((key for key in counts if counts[key] == top), key=lambda k: reached[(k, top)])
    ranked = sorted(counts, key=lambda k: (-counts[k], reached[(k, counts[k])]))
    votes = {shown[key]: counts[key] for key in ranked}
    return votes, shown[best], top / sum(counts.values())


async def vote(ctx: RunContext, options: VoteOptions) -> AsyncIterator:
    """Yield the events of a vote run: `options.samples` answers at once, then the count."""
    result: VoteResult = ctx.result
    temperature = ctx.settings.temperature
    if temperature is None:
        temperature = SAMPLE_TEMPERATURE
    messages = to_messages(prompts.vote_sample_messages(ctx.run.question))

    async def sample(index: int) -> AsyncIterator:
        child = ctx.child()
        async for event in child.call("sample", index, messages, temperature=temperature):
            yield event
        reply = child.reply
        assert reply is not None
        found = read_answer(reply.text)
        done = Sample(
            index=index,
            answer=found[0] if found else None,
            key=found[1] if found else None,
            finished=len(result.samples) + 1,
            **reply.result_fields(),
        )
        result.samples.append(done)
        result.votes, result.winner, result.agreement = tally(result.samples)
        yield CallFinished(kind="sample", index=index, result=done)

    try:
        async for batch in merge({i: sample(i) for i in range(1, options.samples + 1)}):
            for _, event in batch:
                yield event
    except LlamaberryError:
        # The samples that finished still vote: their winner is the run's (partial) answer.
        if result.winner is not None:
            ctx.run.answer, ctx.run.partial = result.winner, True
        raise
    ctx.run.answer = result.winner
    if result.winner is not None:
        # Asked for JSON or tools: the winner, given in that form by one more call.
        async for event in ctx.closing_call(result.winner):
            yield event


MODE = ModeSpec(
    name="vote",
    description="Several independent answers at once; the most common answer wins.",
    options=VoteOptions,
    run=vote,
    result=VoteResult,
    default=False,
)
