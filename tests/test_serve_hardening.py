"""`llamaberry serve` under hostile clients: each test is a client (or an upstream) written to
misbehave, on 127.0.0.1, against the real app run by uvicorn."""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from llamaberry import Engine
from llamaberry.core.errors import InputError
from llamaberry.engine import MAX_CLIENTS
from llamaberry.testing import DEFAULT_MODELS, FakeServer, Reply

from .test_serve import QUESTION, start_endpoint

MESSAGES = [{"role": "user", "content": QUESTION}]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- one engine, each request's own settings --------------------------------------------------


async def test_requests_with_distinct_sampling_settings_do_not_grow_threads_or_fds(
    server: FakeServer,
):
    server.default = Reply("Three.")
    async for endpoint in start_endpoint(server):
        async with httpx.AsyncClient(base_url=endpoint.url, timeout=30) as http:

            async def ask(i: int) -> None:
                body = {"model": "single", "messages": MESSAGES, "max_tokens": 200 + i}
                reply = await http.post("/chat/completions", json=body)
                assert reply.status_code == 200, reply.text

            for i in range(5):  # the first requests open the pools and the history's writer
                await ask(i)
            threads, fds = threading.active_count(), open_fds()
            for i in range(5, 65):
                await ask(i)
            assert threading.active_count() <= threads
            assert open_fds() <= fds + 2
            # Each upstream model a request names has a client (and pool) of its own, at most
            # MAX_CLIENTS of them: the least recently used idle one is closed.
            for i in range(60):
                body = {"model": f"single/no-such-model-{i}", "messages": MESSAGES}
                reply = await http.post("/chat/completions", json=body)
                assert reply.status_code == 404, reply.text
            assert threading.active_count() <= threads
            assert open_fds() <= fds + 2 * MAX_CLIENTS + 2  # a pool and a discovery socket each
    # Each request's own budget went upstream.
    budgets = {r.max_tokens for r in server.requests if "no-such" not in (r.model or "")}
    assert budgets == set(range(200, 265))


async def test_a_request_picks_the_upstream_model_and_effort_of_its_own_run(server: FakeServer):
    other = next(m for m in DEFAULT_MODELS if m != "openai/gpt-oss-120b")
    server.default = Reply("Three.")
    async for endpoint in start_endpoint(server):
        async with httpx.AsyncClient(base_url=endpoint.url, timeout=30) as http:
            body = {
                "model": f"single/{other}",
                "messages": MESSAGES,
                "reasoning_effort": "low",
                "temperature": 0.7,
            }
            reply = await http.post("/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            plain = await http.post(
                "/chat/completions", json={"model": "single", "messages": MESSAGES}
            )
            assert plain.status_code == 200, plain.text
    first, second = (r.body for r in server.requests)
    assert (first["model"], first["reasoning_effort"], first["temperature"]) == (other, "low", 0.7)
    assert second["model"] != other and "reasoning_effort" not in second


async def test_an_engine_runs_each_run_with_its_own_settings(server: FakeServer):
    server.default = Reply("Three.")
    async with Engine(api_key="test-key", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("single", QUESTION, settings={"temperature": 0.2, "max_tokens": 77})
        await engine.run("single", QUESTION)
        with pytest.raises(InputError, match="cannot choose api_key"):
            engine.stream("single", QUESTION, settings={"api_key": "another-key-123"})
        with pytest.raises(InputError, match="max_tokens"):
            engine.stream("single", QUESTION, settings={"max_tokens": -5})
    first, second = (r.body for r in server.requests)
    assert first["temperature"] == 0.2 and first["max_completion_tokens"] == 77
    assert second.get("temperature") != 0.2 and second["max_completion_tokens"] != 77
    assert run.settings["temperature"] == 0.2 and run.settings["max_tokens"] == 77


def test_the_limiter_pool_keeps_a_bounded_number_and_the_recently_used_ones():
    from llamaberry.core.settings import Settings
    from llamaberry.providers.limits import LimiterPool

    pool = LimiterPool()
    kept = Settings.load(api_key="test-key-0000", model="kept")
    first = pool.get(kept)
    for i in range(2000):  # a page (or a client) naming a new model each time
        pool.get(Settings.load(api_key="test-key-0000", model=f"model-{i}"))
        if i % 100 == 0:
            assert pool.get(kept) is first
    assert len(pool) <= pool.size
    assert pool.get(kept) is first
