"""The real-model tier for context windows: the window is read from llama.cpp's own /props, and
a run fitted to a small window fits by the real tokenizer's count, not only by our estimate."""

from __future__ import annotations

import pytest

from llamaberry import Engine
from llamaberry.providers.local import LocalServer

pytestmark = pytest.mark.real


async def test_the_window_is_read_from_the_real_servers_props(local_model: LocalServer):
    async with Engine(provider="local", max_tokens=16, history=False) as engine:
        run = await engine.single("What is 2 + 2?")
    assert run.ok
    assert run.context_window == local_model.context


async def test_a_refine_run_fitted_to_a_small_window_fits_by_the_real_tokenizer(
    local_model: LocalServer,
):
    window, budget = 900, 256
    async with Engine(provider="local", max_tokens=budget, context=window, history=False) as engine:
        run = await engine.refine("How many r are in strawberry?", turns=2)
    assert run.ok, run.error
    assert run.context_window == window
    for call in run.calls:
        # llama.cpp's own prompt count, plus the budget the call was allowed.
        assert call.usage.prompt_tokens + (call.max_tokens or budget) <= window, call
