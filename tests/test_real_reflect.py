"""The reflect mode on the embedded real model (SmolLM2-135M through llama.cpp).

Part of the real tier (`-m real`). The tiny model seldom writes the tags it is asked for, so
this asserts what llamaberry promises whatever the model does: the run ends in a clear state
(an answer, with where it came from, or one line saying there was none) and every reply is
kept as it came. A small budget keeps it short on two cores.
"""

from __future__ import annotations

import pytest

from llamaberry import Engine, Run, RunFailedError, TextDelta
from llamaberry.modes.reflect import ReflectResult
from llamaberry.providers.local import LocalServer

pytestmark = pytest.mark.real


async def test_reflect_ends_in_a_clear_state_with_its_replies_kept(local_model: LocalServer):
    async with Engine(provider="local", max_tokens=96, history=False) as engine:
        await engine.client.ready()  # what a run does first: join the session's server
        assert engine.client.server is local_model  # type: ignore[attr-defined]
        try:
            run: Run = await engine.run("reflect", "What is 12 + 7?", step_budget=3)
        except RunFailedError as failed:
            run = failed.run
    result = run.result
    assert isinstance(result, ReflectResult)
    assert 1 <= len(run.calls) <= 2 and len(result.raw) == len(run.calls)
    # Every reply is kept as it came: the call log's text (cut where a loop began, if the
    # loop guard stopped it) is where each raw reply starts.
    assert all(raw.startswith(call.reply) for raw, call in zip(result.raw, run.calls, strict=True))
    assert len(result.steps) <= 3
    if run.status == "ok":
        assert run.answer and result.answer_from in ("answer", "trailing text", "last step")
        if result.answer_from != "answer":
            assert any("no <answer>" in note for note in run.notes)
    else:
        assert run.status == "failed" and "no answer and no step" in (run.error or "")
    if result.budget_stopped:
        assert run.calls[0].closed_early and any("budget of 3 steps" in n for n in run.notes)


async def test_a_chain_written_without_tags_is_seen_as_it_is_written(local_model: LocalServer):
    # The tiny model writes no tags: its text streams as the chain's until a step is
    # recognised, instead of nothing until the reply ends.
    async with Engine(provider="local", temperature=0, max_tokens=160, history=False) as engine:
        events = [e async for e in engine.stream("reflect", "What is 12 + 7?", step_budget=3)]
    pieces = [e for e in events if isinstance(e, TextDelta)]
    assert pieces, "nothing streamed"
    first = events.index(pieces[0])
    # Text came before the chain's call ended (the call's record is made when it ends).
    assert first < len(events) - 2
    assert len(pieces) > 3 or any(e.kind != "chain" for e in pieces)
