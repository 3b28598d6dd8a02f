"""Request pacing is asyncio-throttle's, with a margin that keeps window roll-overs free of 429s."""

from __future__ import annotations

import asyncio
import time

from asyncio_throttle import Throttler

from llamaberry import Engine
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.limits import RateLimiter, rollover_margin
from llamaberry.providers.retries import RetryPolicy
from llamaberry.testing import FakeServer


def test_request_pacing_is_asyncio_throttle_with_a_roll_over_margin():
    limiter = RateLimiter(rpm=30)
    assert isinstance(limiter.throttler, Throttler)
    assert limiter.throttler.rate_limit == 30
    # A minute's window plus a second: our count never frees a slot before the provider's.
    assert limiter.throttler.period == 61.0
    assert RateLimiter(tpm=1000).throttler is None


def test_the_margin_covers_the_send_to_count_lag_and_costs_under_two_percent_in_a_minute():
    assert rollover_margin(60.0) == 1.0
    assert rollover_margin(60.0) / 60.0 < 0.02
    # The lag does not shrink with the window, and a loaded machine spreads it by over 0.1 s.
    assert rollover_margin(1.0) >= 0.3


async def test_calls_across_several_window_roll_overs_draw_no_429():
    # The server allows 4 requests in any 1 s window and answers the fifth with a 429; with
    # retries off, a single collision at a roll-over would fail a run. Without the margin every
    # run of this test draws one; with the old 0.1 s floor one in ten did on a loaded 2-core
    # machine, where client and server share one event loop and its send-to-count lag.
    arrivals: list[float] = []
    async with FakeServer(rpm_limit=4, limit_window=1.0, latency=0.02) as server:
        server.reply_with(lambda request: arrivals.append(time.perf_counter()) or "ok")
        client = GroqClient(
            api_key="test-key",
            base_url=server.groq_base_url,
            model="openai/gpt-oss-120b",
            retry=RetryPolicy(max_retries=0),
            limiter=RateLimiter(rpm=4, period=1.0),
        )
        async with Engine(client=client, history=False) as engine:
            await engine.client.ready()
            runs = await asyncio.gather(
                *(engine.single(f"q{i}") for i in range(14)), return_exceptions=True
            )
        assert [getattr(r, "status", r) for r in runs] == ["ok"] * 14
        assert server.rate_limited == 0
        # Four windows' worth of calls were really spread over them, not sent at once.
        arrivals.sort()
        assert arrivals[-1] - arrivals[0] >= 3.0
