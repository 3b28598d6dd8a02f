"""The fake chat-completions server, exercised through the real groq and openai SDKs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator

import groq
import httpx
import openai
import pytest

from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply, estimate_prompt_tokens

MODEL = "openai/gpt-oss-20b"
HELLO = [{"role": "user", "content": "hello there"}]
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


_open_clients: list[groq.AsyncGroq | openai.AsyncOpenAI] = []


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer() as running:
        yield running


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    # Closing in-loop keeps the SDKs from scheduling cleanup on a closed loop later.
    yield
    while _open_clients:
        await _open_clients.pop().close()


def groq_client(server: FakeServer, **kwargs: object) -> groq.AsyncGroq:
    client = groq.AsyncGroq(api_key="test", base_url=server.groq_base_url, max_retries=0, **kwargs)
    _open_clients.append(client)
    return client


def openai_client(server: FakeServer, **kwargs: object) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(
        api_key="test", base_url=server.openai_base_url, max_retries=0, **kwargs
    )
    _open_clients.append(client)
    return client


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- replies


async def test_groq_non_stream_reply_has_content_usage_and_x_groq_id(server: FakeServer) -> None:
    server.enqueue(Reply("four words of text", reasoning="let me think"))
    messages = [{"role": "system", "content": "be brief"}, *HELLO]
    completion = await groq_client(server).chat.completions.create(model=MODEL, messages=messages)

    choice = completion.choices[0]
    assert choice.message.content == "four words of text"
    assert choice.message.reasoning == "let me think"
    assert choice.finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.x_groq is not None and completion.x_groq.id
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == estimate_prompt_tokens(messages) == (2 + 4) + (3 + 4)
    assert completion.usage.completion_tokens == 4 + 3
    assert completion.usage.total_tokens == 13 + 7


async def test_openai_non_stream_reply_has_no_x_groq(server: FakeServer) -> None:
    server.enqueue("hi from openai")
    completion = await openai_client(server).chat.completions.create(model=MODEL, messages=HELLO)

    assert completion.choices[0].message.content == "hi from openai"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert not (completion.model_extra or {}).get("x_groq")


async def test_groq_stream_yields_role_reasoning_words_and_usage_in_x_groq(
    server: FakeServer,
) -> None:
    server.enqueue(Reply("one two  three", reasoning="hmm ok"))
    stream = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    reasoning = [c.choices[0].delta.reasoning for c in chunks if c.choices[0].delta.reasoning]
    assert reasoning == ["hmm ", "ok"]
    content = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert content == ["one ", "two  ", "three"]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.x_groq is not None and last.x_groq.usage is not None
    assert last.x_groq.usage.completion_tokens == 5
    assert last.x_groq.usage.prompt_tokens == estimate_prompt_tokens(HELLO)


async def test_openai_stream_with_include_usage_ends_with_usage_chunk(server: FakeServer) -> None:
    server.enqueue(Reply("alpha beta gamma delta", chunk_words=2))
    stream = await openai_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert content == ["alpha beta ", "gamma delta"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


async def test_groq_stream_with_include_usage_gets_both_usage_forms(server: FakeServer) -> None:
    stream = await groq_client(server).chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        extra_body={"stream_options": {"include_usage": True}},
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[-2].x_groq is not None and chunks[-2].x_groq.usage is not None
    assert chunks[-1].choices == [] and chunks[-1].usage == chunks[-2].x_groq.usage


async def test_models_are_listed_on_both_prefixes(server: FakeServer) -> None:
    groq_models = await groq_client(server).models.list()
    openai_models = await openai_client(server).models.list()

    assert [m.id for m in groq_models.data] == server.models
    assert [m.id for m in openai_models.data] == server.models
    assert groq_models.data[0].context_window == 131072


async def test_unknown_route_is_404_json(server: FakeServer) -> None:
    async with httpx.AsyncClient(base_url=server.groq_base_url) as http:
        response = await http.post("/openai/v1/embeddings", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


# --------------------------------------------------------------------------- scripting


async def test_queue_is_fifo_and_requests_are_logged_in_order(server: FakeServer) -> None:
    server.enqueue("first", Reply('{"n": 2}'))
    client = groq_client(server)
    messages = [
        {"role": "system", "content": "sys prompt"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    one = await client.chat.completions.create(model=MODEL, messages=messages)
    two = await openai_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, response_format={"type": "json_object"}
    )
    async for _ in two:
        pass
    three = await client.chat.completions.create(model=MODEL, messages=HELLO)

    assert one.choices[0].message.content == "first"
    assert three.choices[0].message.content == "echo: hello there"
    first, second, third = server.requests
    assert (first.method, first.path, first.provider) == (
        "POST",
        "/openai/v1/chat/completions",
        "groq",
    )
    assert first.headers["authorization"] == "Bearer test"
    assert first.model == MODEL and first.messages == messages
    assert (first.system, first.user, first.stream, first.json_mode) == (
        "sys prompt",
        "q2",
        False,
        False,
    )
    assert (second.provider, second.stream, second.json_mode) == ("openai", True, True)
    assert third.body["messages"] == HELLO


async def test_reply_with_handler_answers_once_queue_is_empty(server: FakeServer) -> None:
    seen: list[RecordedRequest] = []

    def handler(request: RecordedRequest) -> str:
        seen.append(request)
        return f"handled {request.user}"

    server.enqueue("queued")
    server.reply_with(handler)
    client = groq_client(server)
    replies = [
        (await client.chat.completions.create(model=MODEL, messages=HELLO)).choices[0].message
        for _ in range(2)
    ]

    assert [r.content for r in replies] == ["queued", "handled hello there"]
    assert len(seen) == 1


async def test_async_handler_and_declining_handler_fall_through(server: FakeServer) -> None:
    async def handler(request: RecordedRequest) -> Reply | None:
        await asyncio.sleep(0)
        return Reply("async reply") if request.user == "please" else None

    server.reply_with(handler)
    client = openai_client(server)
    yes = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "please"}]
    )
    no = await client.chat.completions.create(model=MODEL, messages=HELLO)

    assert yes.choices[0].message.content == "async reply"
    assert no.choices[0].message.content == "echo: hello there"


async def test_default_reply_is_used_when_nothing_else_is_scripted() -> None:
    async with FakeServer(default=lambda request: f"default for {request.model}") as server:
        completion = await groq_client(server).chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == f"default for {MODEL}"


async def test_reset_clears_queue_handler_and_log(server: FakeServer) -> None:
    server.enqueue("stale")
    server.reply_with(lambda request: "stale handler")
    await groq_client(server).models.list()
    server.reset()

    completion = await groq_client(server).chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    assert len(server.requests) == 1


async def test_reply_headers_and_finish_reason_are_sent(server: FakeServer) -> None:
    server.enqueue(Reply("cut", finish_reason="length", headers={"x-custom": "yes"}))
    raw = await groq_client(server).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO
    )
    assert raw.headers["x-custom"] == "yes"
    assert (await raw.parse()).choices[0].finish_reason == "length"


# --------------------------------------------------------------------------- validation


async def test_unknown_model_raises_not_found(server: FakeServer) -> None:
    with pytest.raises(groq.NotFoundError) as caught:
        await groq_client(server).chat.completions.create(model="nope", messages=HELLO)
    assert caught.value.body["error"]["code"] == "model_not_found"
    assert "`nope` does not exist" in caught.value.body["error"]["message"]


async def test_decommissioned_model_is_a_bad_request(server: FakeServer) -> None:
    with pytest.raises(groq.BadRequestError) as caught:
        await groq_client(server).chat.completions.create(
            model="llama-3.3-70b-versatile", messages=HELLO
        )
    assert caught.value.body["error"]["code"] == "model_decommissioned"
    assert "decommissioned" in caught.value.body["error"]["message"]


async def test_wrong_api_key_is_rejected_and_right_one_accepted() -> None:
    async with FakeServer(api_key="secret") as server:
        with pytest.raises(groq.AuthenticationError) as caught:
            await groq_client(server).chat.completions.create(model=MODEL, messages=HELLO)
        good = groq.AsyncGroq(api_key="secret", base_url=server.groq_base_url, max_retries=0)
        _open_clients.append(good)
        completion = await good.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.body["error"]["code"] == "invalid_api_key"
    assert completion.choices[0].message.content == "echo: hello there"


async def test_json_mode_rejects_scripted_non_json_like_groq(server: FakeServer) -> None:
    server.enqueue("not json at all", '{"ok": true}')
    client = groq_client(server)
    with pytest.raises(groq.BadRequestError) as caught:
        await client.chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
    ok = await client.chat.completions.create(
        model=MODEL, messages=HELLO, response_format={"type": "json_object"}
    )
    echo = await client.chat.completions.create(
        model=MODEL, messages=HELLO, response_format={"type": "json_object"}
    )

    error = caught.value.body["error"]
    assert error["code"] == "json_validate_failed"
    assert error["failed_generation"] == "not json at all"
    assert json.loads(ok.choices[0].message.content or "") == {"ok": True}
    assert json.loads(echo.choices[0].message.content or "") == {"echo": "hello there"}


STRICT_STEP = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "next_action": {"type": "string", "enum": ["continue", "final_answer"]},
    },
    "required": ["title", "next_action"],
    "additionalProperties": False,
}


def schema_format(schema: dict, strict: bool = True) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "step", "strict": strict, "schema": schema},
    }


async def test_a_strict_schema_that_keeps_strict_rules_is_taken(server: FakeServer) -> None:
    server.enqueue('{"title": "t", "next_action": "continue"}')
    completion = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, response_format=schema_format(STRICT_STEP)
    )
    assert json.loads(completion.choices[0].message.content or "")["title"] == "t"
    request = server.requests[-1]
    assert request.response_format == "json_schema" and request.json_mode
    assert request.json_schema == STRICT_STEP


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"additionalProperties": True}, "'additionalProperties' is required"),
        ({"required": ["title"]}, "'required' must include every property"),
    ],
)
async def test_a_strict_schema_that_breaks_strict_rules_is_refused(
    server: FakeServer, change: dict, problem: str
) -> None:
    with pytest.raises(groq.BadRequestError) as caught:
        await groq_client(server).chat.completions.create(
            model=MODEL, messages=HELLO, response_format=schema_format({**STRICT_STEP, **change})
        )
    error = caught.value.body["error"]
    assert error["param"] == "response_format"
    assert problem in error["message"]
    # Best-effort mode (strict off) takes the same schema.
    await groq_client(server).chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format=schema_format({**STRICT_STEP, **change}, strict=False),
    )


async def test_a_server_without_structured_outputs_refuses_json_schema_only() -> None:
    async with FakeServer(json_schema=False) as server:
        server.enqueue('{"ok": true}')
        client = openai_client(server)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=MODEL, messages=HELLO, response_format=schema_format(STRICT_STEP)
            )
        ok = await client.chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
    error = caught.value.body if "param" in caught.value.body else caught.value.body["error"]
    assert error["param"] == "response_format"
    assert "json_schema" in error["message"]
    # The refused request used no scripted reply; the next one got it.
    assert json.loads(ok.choices[0].message.content or "") == {"ok": True}


async def test_a_reply_longer_than_its_budget_is_cut_off(server: FakeServer) -> None:
    server.enqueue(Reply("one two three four five", reasoning="let me see"))
    completion = await openai_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=5
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    # The hidden reasoning spends the budget first, as a reasoning model's does.
    assert choice.message.content == "one two"
    assert completion.usage is not None and completion.usage.completion_tokens == 5

    server.enqueue("one two three four")
    stream = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=3, stream=True
    )
    pieces, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert ("".join(pieces), finish) == ("one two three", "length")

    server.enqueue("one two three")
    fits = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=3
    )
    assert fits.choices[0].finish_reason == "stop"
    assert fits.choices[0].message.content == "one two three"


async def test_llama_cpp_closes_a_json_string_at_its_schemas_max_length() -> None:
    # llama.cpp compiles the schema to a grammar, so the model cannot write past a maxLength:
    # the string is closed there and the object goes on. Other servers take what is scripted.
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 5}, "n": {"type": "integer"}},
        "required": ["title", "n"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "strict": True, "schema": schema}}
    runaway = json.dumps({"title": "8888888888", "n": 1})
    for flavor, title in (("llamacpp", "88888"), ("openai", "8888888888")):
        async with FakeServer(flavor=flavor) as server:
            server.enqueue(runaway)
            completion = await openai_client(server).chat.completions.create(
                model=MODEL, messages=HELLO, response_format=fmt
            )
        content = completion.choices[0].message.content
        assert json.loads(content or "") == {"title": title, "n": 1}, flavor


async def test_json_validation_can_be_switched_off() -> None:
    async with FakeServer(json_validation=False) as server:
        server.enqueue("plain")
        completion = await groq_client(server).chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
    assert completion.choices[0].message.content == "plain"


async def test_prompt_over_max_context_is_rejected() -> None:
    async with FakeServer(max_context=50) as server:
        with pytest.raises(openai.BadRequestError) as caught:
            await openai_client(server).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x" * 400}]
            )
    assert caught.value.code == "context_length_exceeded"


# --------------------------------------------------------------------------- faults


async def test_status_fault_sends_status_body_and_headers(server: FakeServer) -> None:
    server.enqueue(Fault.status(429, headers={"retry-after": "2"}), Fault.status(503))
    client = groq_client(server)
    with pytest.raises(groq.RateLimitError) as limited:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(groq.InternalServerError) as unavailable:
        await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)

    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.body["error"]["code"] == "rate_limit_exceeded"
    assert unavailable.value.status_code == 503
    assert server.rate_limited == 0  # scripted faults are not the limiter's doing


async def test_fault_takes_priority_over_json_validation(server: FakeServer) -> None:
    server.enqueue(Fault.status(500))
    with pytest.raises(groq.InternalServerError):
        await groq_client(server).chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )


async def test_drop_is_a_connection_error_for_both_sdks(server: FakeServer) -> None:
    server.enqueue(Fault.drop(), Fault.drop())
    with pytest.raises(groq.APIConnectionError):
        await groq_client(server).chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(openai.APIConnectionError):
        await openai_client(server).chat.completions.create(model=MODEL, messages=HELLO)


async def test_drop_after_cuts_a_stream_after_n_chunks(server: FakeServer) -> None:
    server.enqueue(Fault.drop_after(2, text="a b c d e f"))
    stream = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    received: list[str] = []
    with pytest.raises((groq.APIConnectionError, httpx.HTTPError)):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "a b "


async def test_drop_after_on_openai_stream_raises_connection_error(server: FakeServer) -> None:
    server.enqueue(Fault.drop_after(1))
    stream = await openai_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    received = 0
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            received += 1
    assert received == 2  # the role chunk and one content chunk


async def test_truncated_bodies_fail_for_non_stream_and_stream(server: FakeServer) -> None:
    server.enqueue(Fault.truncate(), Fault.drop_after(3), Fault.truncate(text="1 2 3 4"))
    client = groq_client(server)
    for _ in range(2):
        with pytest.raises(groq.APIConnectionError):
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    received: list[str] = []
    with pytest.raises((groq.APIConnectionError, httpx.HTTPError)):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "1 2 "


async def test_hang_times_out_and_does_not_block_shutdown() -> None:
    started = time.monotonic()
    async with FakeServer() as server:
        server.enqueue(Fault.hang())
        with pytest.raises(groq.APITimeoutError):
            await groq_client(server, timeout=0.3).chat.completions.create(
                model=MODEL, messages=HELLO
            )
    assert time.monotonic() - started < 3


def test_thread_mode_stops_promptly_with_hung_and_idle_connections() -> None:
    with FakeServer() as server:
        server.enqueue(Fault.hang())
        errors: list[Exception] = []

        def call_and_wait() -> None:
            client = groq.Groq(api_key="t", base_url=server.groq_base_url, max_retries=0)
            try:
                client.chat.completions.create(model=MODEL, messages=HELLO)
            except Exception as exc:
                errors.append(exc)

        hung = threading.Thread(target=call_and_wait, daemon=True)
        hung.start()
        idle = socket.create_connection(("127.0.0.1", server.port))
        while not server.requests:
            time.sleep(0.01)
        started = time.monotonic()
    # A hung request never ends by itself: stopping within 10 s shows the server closed it
    # (10 s rather than 2 s leaves room for a loaded machine's scheduling).
    assert time.monotonic() - started < 10
    hung.join(timeout=10)
    assert not hung.is_alive()
    assert isinstance(errors[0], groq.APIConnectionError)
    assert idle.recv(1) == b""  # the server closed the idle keep-alive connection
    idle.close()


# --------------------------------------------------------------------------- rate limits


async def test_rate_limit_headers_are_generous_without_limits(server: FakeServer) -> None:
    raw = await groq_client(server).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, stream=True
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "1000000"
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert raw.headers["content-type"] == "text/event-stream"
    async for _ in await raw.parse():
        pass


async def test_rpm_limit_rejects_the_third_request_with_429() -> None:
    async with FakeServer(rpm_limit=2) as server:
        client = groq_client(server)
        first = await client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        second = await client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        with pytest.raises(groq.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)

    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.match(second.headers["x-ratelimit-reset-requests"])
    headers = caught.value.response.headers
    assert headers["retry-after"] in ("59", "60")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    message = caught.value.body["error"]["message"]
    assert "requests per minute (RPM): Limit 2, Used 2, Requested 1" in message
    assert caught.value.body["error"]["type"] == "requests"
    assert server.rate_limited == 1


async def test_tpm_limit_counts_prompt_and_completion_tokens() -> None:
    async with FakeServer(tpm_limit=30) as server:
        server.enqueue("one two three four five six seven eight nine ten")  # 10 tokens
        client = openai_client(server)
        prompt = estimate_prompt_tokens(HELLO)  # 7 tokens
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        await client.chat.completions.create(model=MODEL, messages=HELLO)  # echo: 3 tokens
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)

    assert raw.headers["x-ratelimit-remaining-tokens"] == str(30 - prompt - 10)
    assert "tokens per minute (TPM): Limit 30, Used 27, Requested 7" in caught.value.message
    assert server.rate_limited == 1


# --------------------------------------------------------------------------- timing


async def test_latency_delays_the_response() -> None:
    async with FakeServer(latency=0.2) as server:
        server.enqueue("slow", Reply("fast", latency=0))
        client = groq_client(server)
        started = time.monotonic()
        await client.chat.completions.create(model=MODEL, messages=HELLO)
        slow = time.monotonic() - started
        started = time.monotonic()
        await client.chat.completions.create(model=MODEL, messages=HELLO)
        fast = time.monotonic() - started
    assert slow >= 0.2
    assert fast < slow


async def test_chunk_delay_paces_stream_chunks(server: FakeServer) -> None:
    server.enqueue(Reply("a b c d", chunk_delay=0.05))
    started = time.monotonic()
    stream = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    arrivals = [time.monotonic() - started async for _ in stream]
    assert arrivals[-1] >= 5 * 0.05  # four words plus the finishing chunk
    assert arrivals[1] < arrivals[-1]


# --------------------------------------------------------------------------- thread mode


def test_thread_mode_serves_the_sync_groq_client() -> None:
    with FakeServer() as server:
        server.enqueue("from a thread")
        client = groq.Groq(api_key="test", base_url=server.groq_base_url, max_retries=0)
        completion = client.chat.completions.create(model=MODEL, messages=HELLO)
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        )
    assert completion.choices[0].message.content == "from a thread"
    assert streamed == "echo: hello there"
    with pytest.raises(RuntimeError):
        _ = server.port


def test_fake_server_fixture_in_a_sync_test(fake_server: FakeServer) -> None:
    fake_server.enqueue("fixture reply")
    client = openai.OpenAI(api_key="test", base_url=fake_server.openai_base_url, max_retries=0)
    completion = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "fixture reply"


async def test_fake_server_fixture_in_an_async_test(fake_server: FakeServer) -> None:
    completion = await groq_client(fake_server).chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"


# --------------------------------------------------------------------------- HTTP robustness


async def test_keep_alive_connection_serves_several_requests(server: FakeServer) -> None:
    request = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    response = await asyncio.to_thread(raw_exchange, server.port, request)
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert b"connection: close" in response


async def test_chunked_request_body_is_accepted(server: FakeServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        payload = json.dumps({"model": MODEL, "messages": HELLO}).encode()
        yield payload[:10]
        yield payload[10:]

    async with httpx.AsyncClient(base_url=server.groq_base_url) as http:
        response = await http.post("/openai/v1/chat/completions", content=body())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nbad header line\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\n{{{",
        b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["request-line", "header", "content-length", "json", "missing-fields"],
)
async def test_malformed_requests_get_400(server: FakeServer, request_bytes: bytes) -> None:
    response = await asyncio.to_thread(raw_exchange, server.port, request_bytes)
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_client_disconnecting_mid_stream_is_harmless(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.enqueue(Reply(" ".join(["word"] * 200), chunk_delay=0.002))
    stream = await groq_client(server).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    async for _ in stream:
        break
    await stream.response.aclose()
    await asyncio.sleep(0.1)

    completion = await groq_client(server).chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_two_hundred_concurrent_streams_complete(server: FakeServer) -> None:
    server.reply_with(lambda request: Reply(f"reply to {request.user} done"))
    groq_side, openai_side = groq_client(server), openai_client(server)

    async def one(i: int) -> str:
        client = groq_side if i % 2 else openai_side
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"n{i}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert results == [f"reply to n{i} done" for i in range(200)]
    assert len(server.requests) == 200


# -- a single-model server with slots, like llama.cpp's --------------------------------------


async def test_a_single_model_server_answers_any_id_with_its_own_model() -> None:
    async with FakeServer(served_model="model.gguf") as server:
        client = openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url)
        _open_clients.append(client)
        reply = await client.chat.completions.create(model="anything", messages=HELLO)
        listed = [m.id async for m in client.models.list()]
    assert reply.model == "model.gguf"
    assert listed == ["model.gguf"]


async def test_slots_are_served_at_props_and_replies_carry_timings() -> None:
    async with FakeServer(slots=2, latency=0.05, chunk_delay=0.01) as server:
        async with httpx.AsyncClient() as http:
            props = (await http.get(f"{server.groq_base_url}/props")).json()
        client = openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url)
        _open_clients.append(client)
        whole = await client.chat.completions.create(model=MODEL, messages=HELLO)
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
    assert props["total_slots"] == 2
    # llama.cpp's timings name the tokens they cover too (prompt_n, predicted_n).
    assert whole.timings == {  # type: ignore[attr-defined]
        "prompt_n": whole.usage.prompt_tokens,  # type: ignore[union-attr]
        "cache_n": 0,  # the first request: nothing in the cache yet
        "prompt_ms": 50.0,
        "predicted_n": whole.usage.completion_tokens,  # type: ignore[union-attr]
        "predicted_ms": 0.0,
    }
    ending = [c for c in chunks if getattr(c, "timings", None)]
    assert len(ending) == 1 and ending[0].choices[0].finish_reason == "stop"
    assert ending[0].timings["predicted_ms"] > 0  # type: ignore[attr-defined]


async def test_without_slots_there_are_no_props_and_no_timings(server: FakeServer) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.groq_base_url}/props")
    client = openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url)
    _open_clients.append(client)
    reply = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert response.status_code == 404
    assert getattr(reply, "timings", None) is None


async def test_a_server_with_one_slot_answers_one_request_at_a_time() -> None:
    async with FakeServer(slots=1, latency=0.2) as server:
        client = openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url)
        _open_clients.append(client)
        started = time.perf_counter()
        await asyncio.gather(
            *(client.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(3))
        )
    assert time.perf_counter() - started >= 0.6
