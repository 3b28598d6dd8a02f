"""The steps mode on the embedded real model (SmolLM2-135M through llama.cpp): asked with the
step's JSON schema, its steps are valid as the model writes them (issue 18).

Part of the real tier (`-m real`). It asserts the share of well-formed steps, never what the
tiny model reasons; `bench/step_formats.py` measures the same with json_object beside it.
"""

from __future__ import annotations

import json

import pytest

from llamaberry import Engine, Run, RunFailedError
from llamaberry.providers.local import LOCAL_MAX_TOKENS, LocalServer

pytestmark = pytest.mark.real

QUESTIONS = (
    "What is 12 + 7?",
    'How many times does the letter r appear in "strawberry"?',
    "Is 17 a prime number?",
    "What is the capital of France?",
    "What is 9 times 6?",
    "Which is larger, 0.8 or 0.75?",
    "How many days are in a leap year?",
    "What is half of 48?",
    # A chain now stops at a repeated step, so some give two steps, not three: two more
    # questions keep the sample above 20 steps.
    "What is 15 minus 6?",
    "How many legs does a spider have?",
)


def valid_as_written(reply: str) -> bool:
    """A step exactly as the model wrote it: an object of a non-empty title and content and
    a next_action of "continue" or "final_answer", and nothing else."""
    try:
        data = json.loads(reply)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and set(data) == {"title", "content", "next_action"}
        and all(isinstance(data[key], str) and data[key].strip() for key in ("title", "content"))
        and data["next_action"] in ("continue", "final_answer")
    )


def first_replies(run: Run) -> list[str]:
    """For each step the run asked for, its first reply as the model wrote it."""
    seen: dict[int, str] = {}
    for call in run.calls:
        if call.kind == "step" and call.index not in seen:
            seen[call.index] = call.reply
    return list(seen.values())


async def test_steps_asked_with_the_schema_are_valid_on_the_first_try(
    local_model: LocalServer,
):
    # Issue 18 asks for 9 in 10. The misses the tiny model makes, sampled at the server's own
    # temperature, are fields that run away (drift, counting loops) until the budget cuts the
    # JSON off; the grammar closes the title and content at their maxLength first, and the
    # budget is the local provider's default, which a whole bounded step fits.
    replies: list[str] = []
    # At least 20 steps, so one unlucky sample cannot swing the share.
    async with Engine(provider="local", max_tokens=LOCAL_MAX_TOKENS, history=False) as engine:
        for question in QUESTIONS:
            try:
                run = await engine.steps(question, min_steps=3, max_steps=3)
            except RunFailedError as failed:
                run = failed.run
            assert {c.response_format for c in run.calls if c.kind == "step"} == {"json_schema"}
            replies += first_replies(run)
    assert len(replies) >= 20
    misses = [reply[:160] for reply in replies if not valid_as_written(reply)]
    valid = len(replies) - len(misses)
    # The misses are shown, so a failure in CI says how the model went wrong.
    assert valid / len(replies) >= 0.9, f"{valid} of {len(replies)} valid; misses: {misses}"


async def test_a_chain_that_repeats_a_step_stops_there_instead_of_at_the_bound(
    local_model: LocalServer,
):
    # The tiny model writes the same "continue" step until the bound (24 of them, 60 s and
    # 23,595 tokens for one question before): the first repeat ends the chain.
    async with Engine(provider="local", temperature=0, history=False) as engine:
        run = await engine.steps('How many times does the letter r appear in "strawberry"?')
    steps = run.result.steps
    assert run.status == "ok", run.error
    assert len(steps) < 25
    last = steps[-1]
    assert last.next_action == "final_answer" or last.looped
    assert [s.looped for s in steps[:-1]] == [False] * (len(steps) - 1)
