"""Live tests against the real Groq API: skipped unless GROQ_API_KEY is set.

They spend a few hundred tokens of the key's budget, so they ask small questions with small
budgets and one or two turns.
"""

from __future__ import annotations

import os

import pytest

from llamaberry import Engine

LIVE_KEY = os.environ.get("GROQ_API_KEY")  # read before the autouse fixture clears it
LIVE_MODEL = os.environ.get("LLAMABERRY_LIVE_MODEL", "openai/gpt-oss-20b")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not LIVE_KEY, reason="set GROQ_API_KEY to run live tests against Groq"),
]


async def test_live_models_include_the_configured_model():
    async with Engine(api_key=LIVE_KEY, model=LIVE_MODEL) as engine:
        assert LIVE_MODEL in await engine.models()


async def test_live_single_answers_a_simple_question():
    async with Engine(api_key=LIVE_KEY, model=LIVE_MODEL, max_tokens=1024) as engine:
        run = await engine.single("What is 12 times 12? Reply with the number only.")
    assert "144" in run.answer
    assert run.usage.total_tokens > 0


async def test_live_refine_runs_two_turns_and_a_synthesis():
    async with Engine(
        api_key=LIVE_KEY, model=LIVE_MODEL, max_tokens=2048, reasoning_effort="low"
    ) as engine:
        run = await engine.refine("Is 9.11 larger than 9.9? Answer yes or no.", turns=2)
    assert len(run.result.turns) == 2 and run.result.synthesis is not None
    assert "no" in run.answer.lower()


async def test_live_unknown_model_lists_real_models():
    from llamaberry import RunFailedError

    async with Engine(api_key=LIVE_KEY, model="llama-3.3-70b-versatile") as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("hi")
    assert "llama-3.3-70b-versatile" in failure.value.run.error
