"""The steps mode on the embedded real model (SmolLM2-135M through llama.cpp): asked with the
step's JSON schema, its steps are valid as the model writes them (issue 18).

Part of the real tier (`-m real`). It asserts the share of well-formed steps, never what the
tiny model reasons; `bench/step_formats.py` measures the same with json_object beside it.
"""

from __future__ import annotations

import json

import pytest

from llamaberry import Engine, Run, RunFailedError
from llamaberry.local import LocalServer

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


def first_tries(run: Run) -> list[bool]:
    """For each step the run asked for, whether its first reply was valid as written."""
    seen: dict[int, bool] = {}
    for call in run.calls:
        if call.kind == "step" and call.index not in seen:
            seen[call.index] = valid_as_written(call.reply)
    return list(seen.values())


async def test_steps_asked_with_the_schema_are_mostly_valid_on_the_first_try(
    local_model: LocalServer,
):
    # Issue 18 asks for 9 in 10. Alone this test sees 24 of 24; after the rest of the real
    # tier has run on the same server it has seen 20 and 21 of 24, the misses being the tiny
    # model running a field away to the budget. So it pins what holds, three in four, and the
    # 9-in-10 target stays open on the issue rather than being claimed here.
    valid: list[bool] = []
    # 24 steps, so one unlucky sample cannot swing the share; a budget a step rarely reaches,
    # so what is measured is the schema's hold on the form, not our own cut-off.
    async with Engine(provider="local", max_tokens=256, history=False) as engine:
        for question in QUESTIONS:
            try:
                run = await engine.steps(question, min_steps=3, max_steps=3)
            except RunFailedError as failed:
                run = failed.run
            assert {c.response_format for c in run.calls if c.kind == "step"} == {"json_schema"}
            valid += first_tries(run)
    assert len(valid) >= 20
    assert sum(valid) / len(valid) >= 0.75, f"{sum(valid)} of {len(valid)} valid on the first try"
