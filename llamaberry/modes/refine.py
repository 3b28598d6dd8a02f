"""The refine mode: N reasoning turns, each given the question and every earlier turn, then a
synthesis that merges them. The run's answer is the synthesis's concise answer (or, when the
run fails late, the last good turn's, marked partial).

When every earlier turn in full would overflow the model's context window, a later turn or
the synthesis is given them condensed instead (their critiques and answers, shortened step
by step until the call fits), and the run says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Protocol

from pydantic import Field

from llamaberry.core.errors import LlamaberryError
from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import Message, RefineResult, Run, Synthesis, Turn
from llamaberry.modes import prompts
from llamaberry.modes.parsing import (
    best_answer,
    instead_of_echo,
    ours,
    own_answer,
    parse_synthesis,
    parse_turn,
    read_echo,
)
from llamaberry.run.runner import CallReply, ModeSpec, RunContext, to_messages


class Prompt(Protocol):
    """A condensed prompt: the question and the condensed turns, `compact` for the short one."""

    def __call__(
        self, question: str, digests: Sequence[str], *, compact: bool = False
    ) -> list[tuple[str, str]]: ...


class RefineOptions(Options):
    """How many reasoning turns come before the synthesis."""

    turns: int = Field(
        3,
        ge=1,
        le=10,
        description="Reasoning turns before the synthesis.",
        json_schema_extra={"short_flag": "-n"},
    )


async def refine(ctx: RunContext, options: RefineOptions) -> AsyncIterator:
    """Yield the events of a refine run: `options.turns` turns and a synthesis.

    When a later turn or the synthesis fails, the run keeps the last good turn's answer as
    its (partial) answer before the error ends it: four good turns are not thrown away
    because the fifth did not fit.
    """
    # One generator, not a wrapper around another: every streamed event passes through each.
    result: RefineResult = ctx.result
    try:
        question = ctx.run.question
        texts: list[str] = []
        for index in range(1, options.turns + 1):
            condensed: Iterable[list[Message]] = ()
            if index == 1:
                messages = to_messages(prompts.first_turn_messages(question))
            else:
                messages = to_messages(prompts.later_turn_messages(question, texts))
                condensed = _condensed(
                    question, result.turns, prompts.condensed_later_turn_messages
                )
            async for event in ctx.call("turn", index, messages, condensed=condensed):
                yield event
            reply = ctx.reply
            assert reply is not None
            # The thinking is kept on the turn, never in `texts` sent onwards.
            turn = parse_turn(index, reply.text).model_copy(update=reply.result_fields())
            # Our tags or wording are never an answer.
            copied = [question, *texts]
            turn.answer = own_answer(turn.answer, ours(messages, copied), copied)
            result.turns.append(turn)
            texts.append(reply.text)
            yield CallFinished(kind="turn", index=index, result=turn)

        messages = to_messages(prompts.synthesis_messages(question, texts))
        condensed = _condensed(question, result.turns, prompts.condensed_synthesis_messages)
        async for event in ctx.call("synthesis", 1, messages, condensed=condensed, final=True):
            yield event
        reply = ctx.reply
        assert reply is not None
        synthesis = synthesis_from(reply)
        result.synthesis = synthesis
        ctx.run.answer = synthesis.answer
        echo = read_echo(synthesis.answer, ours(messages, [question, *texts]), [question, *texts])
        if echo.echoed:
            answers = ((turn, turn.answer) for turn in reversed(result.turns))
            ctx.run.answer, line = instead_of_echo(echo, answers, "turn")
            yield ctx.note("synthesis", 1, "fallback", line)
        yield CallFinished(kind="synthesis", index=1, result=synthesis)
    except LlamaberryError:
        if ctx.run.answer is None:
            fallback = best_turn_answer(result.turns)
            if fallback is not None:
                ctx.run.answer, ctx.run.partial = fallback, True
        raise


def best_turn_answer(turns: list[Turn]) -> str | None:
    """The answer of the last turn that finished whole, not cut off or stopped in a loop (else
    of the last with any answer)."""
    best = best_answer((turn, turn.answer) for turn in reversed(turns))
    return best[1] if best else None


def synthesis_from(reply: CallReply) -> Synthesis:
    """The synthesis read from its reply's sections, with what the call cost and how it ended."""
    return parse_synthesis(reply.text).model_copy(update=reply.result_fields())


def _condensed(question: str, turns: Sequence[Turn], prompt: Prompt) -> Iterator[list[Message]]:
    """The condensed forms of a call over `turns`, from the fullest to the shortest, each
    built only when the call asks for it (when the fuller ones do not fit)."""
    for n in prompts.CONDENSED_CHARS:
        digests = [prompts.condense_turn(t.critique, t.answer, n) for t in turns]
        # Under the run's system prompt first (it begins like turn 1's request), then under
        # the short one, before anything more of the turns is cut.
        yield to_messages(prompt(question, digests))
        yield to_messages(prompt(question, digests, compact=True))


def first_turn(run: Run) -> list[tuple[str, Any]]:
    """Turn 1 is a structured single-pass answer in its own right: compare shows it too."""
    turns = run.result.turns if isinstance(run.result, RefineResult) else []
    return [("refine turn 1", turns[0])] if turns else []


MODE = ModeSpec(
    name="refine",
    description="Reasoning turns, each critiquing the ones before, then a synthesis.",
    options=RefineOptions,
    run=refine,
    result=RefineResult,
    extra_entries=first_turn,
)
