"""`llamaberry serve`: the real `openai` SDK talks to our endpoint, which runs modes on a fake
upstream. Everything goes over real sockets: client -> uvicorn -> engine -> SDK -> fake."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest
import uvicorn

from llamaberry import Engine
from llamaberry.core.errors import InputError
from llamaberry.core.settings import Settings
from llamaberry.serve import Gateway, create_app
from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply, estimate_prompt_tokens

from .conftest import FIRST_TURN, LATER_TURN, SYNTHESIS, refine_script, together

QUESTION = "How many r are in strawberry?"


async def saved(run_id: str):
    """The finished run as the history has it, once the store's writer thread has written it."""
    for _ in range(200):
        try:
            run = Store().get(run_id)
        except InputError:  # not written yet
            run = None
        if run is not None and run.status != "running":
            return run
        await asyncio.sleep(0.05)
    return Store().get(run_id)


def words(text: str) -> int:
    return len(text.split())


class Endpoint:
    """A running `llamaberry serve` app and an `openai` client pointed at it."""

    def __init__(self, port: int, gateway: Gateway, api_key: str | None) -> None:
        self.url = f"http://127.0.0.1:{port}/v1"
        self.gateway = gateway
        self.client = openai.AsyncOpenAI(base_url=self.url, api_key=api_key or "none")


async def start_endpoint(
    upstream: FakeServer,
    *,
    api_key: str | None = None,
    rate_period: float = 60.0,
    reasoning: str = "reasoning_content",
    **settings: object,
) -> AsyncIterator[Endpoint]:
    values = {"api_key": "upstream-secret", "base_url": upstream.groq_base_url} | settings
    gateway = Gateway(Settings.load(**values), rate_period=rate_period)
    # These tests read the thinking from reasoning_content; test_serve_clients.py covers the
    # default (inline <think>) and the other formats.
    app = create_app(
        gateway.settings,
        api_key=api_key,
        gateway=gateway,
        reasoning_field=reasoning,  # type: ignore[arg-type]
    )
    # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections (else each keep-alive
    # request waits ~40 ms for a delayed ACK), as it does when uvicorn binds the port itself.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    endpoint = Endpoint(sock.getsockname()[1], gateway, api_key)
    try:
        yield endpoint
    finally:
        await endpoint.client.close()
        server.should_exit = True
        await task


@pytest.fixture
async def endpoint(server: FakeServer):
    async for running in start_endpoint(server):
        yield running


async def stream_parts(client: openai.AsyncOpenAI, model: str, **kwargs: object):
    """Stream a request; return the (part, text) sequence and the final usage."""
    parts: list[tuple[str, str]] = []
    usage = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning = getattr(choice.delta, "reasoning_content", None)
            if reasoning:
                parts.append(("reasoning", reasoning))
            if choice.delta.content:
                parts.append(("content", choice.delta.content))
    return parts, usage


def joined(parts: list[tuple[str, str]], kind: str) -> str:
    return "".join(text for part, text in parts if part == kind)


def expected_usage(server: FakeServer, replies: list[str]) -> tuple[int, int]:
    prompt = sum(estimate_prompt_tokens(r.messages) for r in server.requests)
    return prompt, sum(words(reply) for reply in replies)


# -- streaming each mode ----------------------------------------------------------------------


async def test_refine_streams_its_turns_as_reasoning_before_the_answer_as_content(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    parts, usage = await stream_parts(endpoint.client, "refine")

    reasoning = joined(parts, "reasoning")
    for heading in ("### Turn 1", "### Turn 2", "### Turn 3", "### Synthesis"):
        assert heading in reasoning
    assert reasoning.index("### Turn 1") < reasoning.index("### Synthesis")
    assert "Spell the word" in reasoning  # the turn's own text, streamed
    first_content = next(i for i, (part, _) in enumerate(parts) if part == "content")
    assert all(part == "content" for part, _ in parts[first_content:])
    answer = joined(parts, "content")
    assert "contains the letter r three times" in answer
    assert "## Analysis of Turns" not in answer

    assert len(server.requests) == 4
    prompt, completion = expected_usage(
        server,
        [
            FIRST_TURN,
            LATER_TURN.format(previous=1, index=2),
            LATER_TURN.format(previous=2, index=3),
            SYNTHESIS,
        ],
    )
    assert usage is not None
    assert usage.prompt_tokens == prompt
    assert usage.completion_tokens == completion
    assert usage.total_tokens == prompt + completion
    # Everything refine writes before the answer is intermediate work.
    assert usage.completion_tokens_details.reasoning_tokens == completion


def steps_model(request: RecordedRequest) -> Reply:
    if not request.json_mode:
        return Reply("The answer is 3.")
    done = sum(m["role"] == "assistant" for m in request.messages) >= 2
    step = {
        "title": f"Look {len(request.messages)}",
        # Each step says something new: a repeated step ends the chain as a loop.
        "content": f"Count the letters, pass {len(request.messages)}.",
        "next_action": "final_answer" if done else "continue",
    }
    return Reply(json.dumps(step))


async def test_steps_streams_steps_as_reasoning_and_the_final_answer_as_content(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(steps_model)
    parts, usage = await stream_parts(endpoint.client, "steps")

    reasoning = joined(parts, "reasoning")
    assert "### Step 1" in reasoning and "### Step 3" in reasoning
    assert joined(parts, "content") == "The answer is 3."
    assert parts[-1][0] == "content"
    assert usage is not None
    assert usage.completion_tokens_details.reasoning_tokens == usage.completion_tokens - words(
        "The answer is 3."
    )


async def test_single_streams_the_reply_as_content_with_no_reasoning(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(Reply("There are three r's.", chunk_words=1))
    parts, usage = await stream_parts(endpoint.client, "single")
    assert parts and all(part == "content" for part, _ in parts)
    assert joined(parts, "content") == "There are three r's."
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens == 0
    assert len(server.requests) == 1


def thinking_together(count: int, reply: Callable[[RecordedRequest, int], str]):
    """Calls made at once, each thinking as it streams: the k-th to arrive thinks
    "thought k: ..." word by word, all of them at the same time, then replies `reply(request, k)`."""

    def answer(request: RecordedRequest, k: int) -> Reply:
        thought = f"thought {k}: " + " ".join(f"w{k}.{n}" for n in range(12))
        return Reply(reply(request, k), reasoning=thought, chunk_delay=0.005)

    return together(count, answer)


def call_blocks(reasoning: str, heading: str) -> dict[int, tuple[str, str]]:
    """Each `### <heading> N` block of the reasoning: N -> (its thinking, its reply)."""
    blocks = re.findall(
        rf"### {heading} (\d+)\n\n(thought \d+: [^\n]*)\n\n(.*?)(?=\n\n###|$)",
        reasoning,
        flags=re.S,
    )
    return {int(n): (thought, text) for n, thought, text in blocks}


async def test_vote_sends_each_sample_s_thinking_whole_under_its_own_heading(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(thinking_together(3, lambda request, k: f"Counting.\n\nAnswer: {k % 2}"))
    parts, _ = await stream_parts(endpoint.client, "vote", extra_body={"samples": 3})
    reasoning = joined(parts, "reasoning")
    blocks = call_blocks(reasoning, "Sample")
    assert sorted(blocks) == [1, 2, 3]
    # Each sample's thinking is one unbroken run of its own words, then its reply.
    thoughts = sorted(thought for thought, _ in blocks.values())
    assert thoughts == [
        f"thought {k}: " + " ".join(f"w{k}.{n}" for n in range(12)) for k in (1, 2, 3)
    ]
    for thought, text in blocks.values():
        k = int(thought.split()[1].rstrip(":"))
        assert text == f"Counting.\n\nAnswer: {k % 2}"
    assert joined(parts, "content") == "1"


async def test_drafts_send_each_draft_s_thinking_whole_then_the_synthesis_s(
    server: FakeServer, endpoint: Endpoint
):
    def reply(request: RecordedRequest, k: int) -> str:
        if "<draft" in (request.user or ""):
            return "## Analysis of Drafts\nAll agree.\n\n## Concise Answer\nThree."
        return f"Draft text {k}."

    # Three drafts at once, then the synthesis on its own (the fourth request).
    server.reply_with(thinking_together(3, reply))
    parts, _ = await stream_parts(endpoint.client, "drafts", extra_body={"drafts": 3})
    reasoning = joined(parts, "reasoning")
    blocks = call_blocks(reasoning, "Draft")
    assert sorted(blocks) == [1, 2, 3]
    for thought, text in blocks.values():
        k = int(thought.split()[1].rstrip(":"))
        assert thought == f"thought {k}: " + " ".join(f"w{k}.{n}" for n in range(12))
        assert text == f"Draft text {k}."
    synthesis = reasoning[reasoning.index("### Synthesis") :]
    assert synthesis.startswith("### Synthesis\n\nthought 4: w4.0 ")
    assert "w4.11\n\n## Analysis of Drafts" in synthesis
    assert joined(parts, "content") == "Three."


async def test_every_chunk_of_a_stream_carries_the_run_id(server: FakeServer, endpoint: Endpoint):
    server.enqueue(Reply("There are three r's."))
    stream = await endpoint.client.chat.completions.create(
        model="single", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    ids = {chunk.id async for chunk in stream}
    assert len(ids) == 1
    run_id = ids.pop().removeprefix("chatcmpl-")
    assert (await saved(run_id)).question == QUESTION


async def test_non_streaming_refine_returns_the_answer_and_the_work_apart(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    reply = await endpoint.client.chat.completions.create(
        model="refine", messages=[{"role": "user", "content": QUESTION}]
    )
    message = reply.choices[0].message
    assert "contains the letter r three times" in (message.content or "")
    assert "### Turn 3" in message.reasoning_content  # type: ignore[attr-defined]
    assert reply.model == "refine"
    assert reply.usage is not None
    assert reply.usage.total_tokens == sum(
        c.usage.total_tokens for c in (await saved(reply.id.removeprefix("chatcmpl-"))).calls
    )


async def test_the_upstream_model_is_picked_after_the_mode(server: FakeServer, endpoint: Endpoint):
    await endpoint.client.chat.completions.create(
        model="single/openai/gpt-oss-20b", messages=[{"role": "user", "content": QUESTION}]
    )
    assert server.requests[-1].model == "openai/gpt-oss-20b"


async def test_mode_options_come_from_the_extra_body_and_are_validated(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    await endpoint.client.chat.completions.create(
        model="refine", messages=[{"role": "user", "content": QUESTION}], extra_body={"turns": 2}
    )
    assert len(server.requests) == 3  # two turns and the synthesis

    with pytest.raises(openai.BadRequestError, match="turns must be a whole number from 1 to 10"):
        await endpoint.client.chat.completions.create(
            model="refine",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"turns": 11},
        )
    with pytest.raises(openai.BadRequestError, match="no option tunrs"):
        await endpoint.client.chat.completions.create(
            model="refine",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"tunrs": 2},
        )
    assert len(server.requests) == 3


async def test_temperature_and_max_tokens_are_passed_upstream(
    server: FakeServer, endpoint: Endpoint
):
    await endpoint.client.chat.completions.create(
        model="single",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0.3,
        max_tokens=77,
    )
    body = server.requests[-1].body
    assert body["temperature"] == 0.3
    assert 77 in (body.get("max_completion_tokens"), body.get("max_tokens"))


# -- conversations -----------------------------------------------------------------------------


async def test_earlier_messages_are_context_and_earlier_reasoning_is_never_sent_upstream(
    server: FakeServer, endpoint: Endpoint
):
    await endpoint.client.chat.completions.create(
        model="single",
        messages=[
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "How many r in strawberry?"},
            {
                "role": "assistant",
                "content": "Three, matey.",
                "reasoning_content": "SECRET-INTERMEDIATE-WORK",
            },  # type: ignore[list-item,typeddict-unknown-key]
            {"role": "user", "content": "And in raspberry?"},
        ],
    )
    sent = json.dumps(server.requests[-1].messages)
    assert "SECRET-INTERMEDIATE-WORK" not in sent
    # single passes the conversation through: the system message stays a system message.
    assert server.requests[-1].system == "Answer like a pirate."
    assert [m["role"] for m in server.requests[-1].messages] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert server.requests[-1].messages[2]["content"] == "Three, matey."
    assert server.requests[-1].user == "And in raspberry?"


async def test_a_conversation_must_end_with_a_user_message(server: FakeServer, endpoint: Endpoint):
    with pytest.raises(openai.BadRequestError, match="last message must be from the user"):
        await endpoint.client.chat.completions.create(
            model="single", messages=[{"role": "assistant", "content": "hi"}]
        )
    assert server.requests == []


# -- errors ------------------------------------------------------------------------------------


async def test_an_unknown_model_is_a_404_model_not_found_that_lists_the_modes(
    server: FakeServer, endpoint: Endpoint
):
    # As OpenAI answers it, so a client left on `gpt-4` knows what is wrong.
    with pytest.raises(openai.NotFoundError) as caught:
        await endpoint.client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": QUESTION}]
        )
    assert "refine" in str(caught.value) and "single" in str(caught.value)
    assert caught.value.code == "model_not_found"
    assert server.requests == []


async def test_an_empty_question_is_a_400(server: FakeServer, endpoint: Endpoint):
    with pytest.raises(openai.BadRequestError, match="question is empty"):
        await endpoint.client.chat.completions.create(
            model="single", messages=[{"role": "user", "content": "   "}]
        )


async def test_an_error_after_streaming_began_ends_the_stream_with_an_error_event(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(FIRST_TURN, Fault.status(400, {"error": {"message": "bad turn two"}}))
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="bad turn two"):
        stream = await endpoint.client.chat.completions.create(
            model="refine", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        async for chunk in stream:
            for choice in chunk.choices:
                seen.append(getattr(choice.delta, "reasoning_content", None) or "")
    assert "### Turn 1" in "".join(seen)


async def test_an_unknown_upstream_model_is_a_404_naming_it(server: FakeServer, endpoint: Endpoint):
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        await endpoint.client.chat.completions.create(
            model="single/no-such-model", messages=[{"role": "user", "content": QUESTION}]
        )


async def test_a_long_upstream_rate_limit_is_a_429_with_retry_after(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{endpoint.url}/chat/completions",
            json={"model": "single", "messages": [{"role": "user", "content": QUESTION}]},
        )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3600"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_the_upstream_key_is_never_returned(server: FakeServer, endpoint: Endpoint):
    server.enqueue(
        Fault.status(400, {"error": {"message": "Invalid API Key provided: upstream-secret"}})
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{endpoint.url}/chat/completions",
            json={"model": "single", "messages": [{"role": "user", "content": QUESTION}]},
        )
    assert response.status_code >= 400
    assert "upstream-secret" not in response.text


# -- disconnects, load and auth ----------------------------------------------------------------


async def test_a_client_that_closes_the_stream_during_turn_one_stops_the_run(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(lambda request: Reply(FIRST_TURN, chunk_delay=0.05))
    stream = await endpoint.client.chat.completions.create(
        model="refine", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    async for chunk in stream:
        text = getattr(chunk.choices[0].delta, "reasoning_content", None) if chunk.choices else None
        if text and "Spell" in text:
            break
    await stream.close()
    for _ in range(100):  # wait for the server to notice and settle the run
        runs = list(Store().runs())
        if runs and runs[0].status != "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # time in which turn 2 would have been sent
    assert len(server.requests) == 1
    assert runs[0].status == "cancelled"


async def test_a_non_streaming_client_that_leaves_stops_the_run(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(lambda request: Reply(FIRST_TURN, latency=0.5))
    async with httpx.AsyncClient(timeout=30) as http:
        waiting = asyncio.create_task(
            http.post(
                f"{endpoint.url}/chat/completions",
                json={"model": "refine", "messages": [{"role": "user", "content": QUESTION}]},
            )
        )
        while not server.requests:  # turn 1 is on its way upstream
            await asyncio.sleep(0.01)
        waiting.cancel()  # the client gives up and closes its connection
        with pytest.raises(asyncio.CancelledError):
            await waiting
    for _ in range(200):
        runs = list(Store().runs())
        if runs and runs[0].status != "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # turn 1 would have finished and turn 2 started by now
    assert len(server.requests) == 1
    assert runs[0].status == "cancelled"


async def test_fifty_concurrent_streams_complete_within_the_upstream_rpm(server: FakeServer):
    arrivals: list[float] = []

    def answer(request: RecordedRequest) -> Reply:
        arrivals.append(time.monotonic())
        return Reply("Three.")

    server.reply_with(answer)
    rpm, period = 20, 2.0  # a short window keeps the test short
    async for endpoint in start_endpoint(server, rate_period=period, rpm=rpm):
        results = await asyncio.gather(
            *(stream_parts(endpoint.client, "single") for _ in range(50))
        )
    assert all(joined(parts, "content") == "Three." for parts, _ in results)
    assert len(arrivals) == 50
    # The limiter lets a window's worth go at once, then waits out the window: the calls reach
    # the server in bursts, a window apart. Counted by bursts (split at a lull of half a window)
    # rather than in a sliding window: on a loaded 2-core machine a burst took over a second to
    # get out of this one process, so its tail ran into the next burst's head although the
    # limiter had released them a window apart. Unpaced or unshared, all 50 come as one burst.
    bursts: list[list[float]] = []
    for t in sorted(arrivals):
        if bursts and t - bursts[-1][-1] < period / 2:
            bursts[-1].append(t)
        else:
            bursts.append([t])
    assert [len(burst) for burst in bursts if len(burst) > rpm] == []


async def test_with_a_key_set_a_request_without_it_gets_401_and_nothing_goes_upstream(
    server: FakeServer,
):
    async for endpoint in start_endpoint(server, api_key="serve-key"):
        stranger = openai.AsyncOpenAI(base_url=endpoint.url, api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(
                model="single", messages=[{"role": "user", "content": QUESTION}]
            )
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
        await stranger.close()
        assert server.requests == []
        reply = await endpoint.client.chat.completions.create(
            model="single", messages=[{"role": "user", "content": QUESTION}]
        )
        assert reply.choices[0].message.content
        assert len(server.requests) == 1


# -- models and health -------------------------------------------------------------------------


async def test_models_lists_every_mode_and_each_mode_with_each_upstream_model(
    server: FakeServer, endpoint: Endpoint
):
    names = [model.id async for model in endpoint.client.models.list()]
    for mode in ("single", "refine", "steps"):
        assert mode in names
        assert f"{mode}/openai/gpt-oss-20b" in names
    async with httpx.AsyncClient() as http:
        health = await http.get(endpoint.url.removesuffix("/v1") + "/health")
    assert health.json() == {"status": "ok"}


# -- the command -------------------------------------------------------------------------------


def test_the_serve_command_serves_and_warns_beyond_loopback_without_a_key(tmp_path):
    with FakeServer() as upstream:
        upstream.enqueue(Reply("Three."))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
        env |= {
            "GROQ_API_KEY": "upstream-secret",
            "GROQ_BASE_URL": upstream.groq_base_url,
            "LLAMABERRY_HOME": str(tmp_path),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "llamaberry", "serve", "--host", "0.0.0.0", "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    reply = httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "single", "messages": [{"role": "user", "content": "hi"}]},
                        timeout=10,
                    )
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert reply.json()["choices"][0]["message"]["content"] == "Three."
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert "without --api-key" in stderr
    assert "upstream-secret" not in stderr


async def test_an_engine_can_ask_the_endpoint_over_uvicorns_http(
    server: FakeServer, endpoint: Endpoint
):
    # Our own HTTP client against a server it was not written with: uvicorn's, streaming and
    # keeping the connection for the next call.
    server.enqueue(Reply("first answer", chunk_words=1), Reply("second answer", chunk_words=1))
    engine = Engine(
        provider="openai", api_key="none", base_url=endpoint.url, model="single", history=False
    )
    async with engine:
        first = await engine.single("one")
        second = await engine.single("two")
    assert (first.answer, second.answer) == ("first answer", "second answer")
    assert [call.attempts for call in first.calls + second.calls] == [1, 1]
