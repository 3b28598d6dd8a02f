"""Reading replies off the wire ourselves: server-sent events into our own chunks, errors
inside a stream, and connection pools that open as load needs them."""

from __future__ import annotations

import asyncio

import pytest

from llamaberry import Engine, TextDelta, TextReset
from llamaberry.engine import collect
from llamaberry.providers.streams import Chunk, StreamErrorEvent, read_chunks
from llamaberry.testing import FakeServer, Fault, Reply


def base_url(server: FakeServer, provider: str) -> str:
    return server.groq_base_url if provider == "groq" else server.openai_base_url


async def blocks(data: bytes, size: int):
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def chunks_of(data: bytes, size: int) -> list[Chunk]:
    return [chunk async for chunk in read_chunks(blocks(data, size))]


WIRE = (
    b": a comment line the reader skips\r\n"
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
    b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9 "}}]}\n\n'
    b'data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],\n'
    b'data: "x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":2}}}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
    b'data: {"choices":[{"delta":{"content":"after done"}}]}\n\n'
)


@pytest.mark.parametrize("size", [1, 7, len(WIRE)])
async def test_events_split_anywhere_across_reads_decode_to_the_same_chunks(size: int):
    chunks = await chunks_of(WIRE, size)
    assert [c.content for c in chunks] == ["", "café ", None, None, None]
    assert chunks[2].reasoning == "hmm"
    assert chunks[3].finish_reason == "stop"
    assert chunks[3].usage == {"prompt_tokens": 3, "completion_tokens": 2}  # from x_groq
    assert chunks[4].usage == {"prompt_tokens": 3, "completion_tokens": 2}  # the usage chunk


async def test_an_error_object_or_an_error_event_in_a_stream_raises():
    with pytest.raises(StreamErrorEvent, match="overloaded"):
        await chunks_of(b'data: {"error":{"message":"overloaded"}}\n\n', 5)
    with pytest.raises(StreamErrorEvent, match="gone"):
        await chunks_of(b'event: error\ndata: {"error":{"message":"gone"}}\n\n', 5)


@pytest.mark.parametrize("as_event", [False, True])
async def test_an_error_inside_a_stream_is_retried_and_its_partial_text_discarded(
    server: FakeServer, provider: str, as_event: bool
):
    server.enqueue(Fault.stream_error(2, "Service overloaded", as_event=as_event), "the answer")
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        events = [event async for event in e.single_stream("hi")]
    resets = [event for event in events if isinstance(event, TextReset)]
    assert len(resets) == 1 and "Service overloaded" in resets[0].reason
    after = events[events.index(resets[0]) + 1 :]
    assert "".join(ev.text for ev in after if isinstance(ev, TextDelta)) == "the answer"
    run = events[-1].run  # type: ignore[union-attr]
    assert run.ok and run.answer == "the answer" and run.calls[0].attempts == 2


async def test_a_lasting_error_inside_a_stream_fails_with_the_servers_words(server: FakeServer):
    server.reply_with(lambda request: Fault.stream_error(1, "GPU fell over", code=500))
    async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
        engine.client.retry.base_delay = 0.01
        run = await collect_failed(engine)
    assert "GPU fell over" in (run.error or "")
    assert len(server.requests) == engine.client.retry.max_retries + 1


async def collect_failed(engine: Engine):
    from llamaberry import RunFailedError

    with pytest.raises(RunFailedError) as failure:
        await collect(engine.single_stream("hi"))
    return failure.value.run


async def test_an_engine_warms_one_pool_and_one_call_at_a_time_needs_no_more(
    server: FakeServer,
):
    engine = Engine(api_key="k", base_url=server.groq_base_url, history=False)
    await engine.client.ready()
    assert engine.client.pools == 1
    for _ in range(3):
        await engine.single("hi")
    assert engine.client.pools == 1
    await engine.aclose()


async def test_calls_in_flight_share_one_pool_as_large_as_the_concurrency(monkeypatch):
    monkeypatch.setenv("LLAMABERRY_CONCURRENCY", "5")
    async with FakeServer(latency=0.3) as server:
        engine = Engine(api_key="k", base_url=server.groq_base_url, history=False)
        runs = await asyncio.gather(*(engine.single(f"q{i}") for i in range(20)))
        assert [run.answer for run in runs] == [f"echo: q{i}" for i in range(20)]
        assert engine.client.pools == 1
        assert server.connections_opened == 5
        await engine.aclose()


async def test_whole_replies_are_read_without_the_sdk_models(server: FakeServer, provider: str):
    server.enqueue(Reply('{"a": 1}', usage={"prompt_tokens": 9, "completion_tokens": 4}))
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        reply = await e.client.complete([], json_mode=True)
    assert reply.text == '{"a": 1}' and reply.finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 4)


async def test_calls_one_after_another_reuse_one_connection(server: FakeServer, provider: str):
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        for _ in range(3):
            await e.single("hi")
    assert len(server.requests) == 3
    assert server.connections_opened == 1


async def test_calls_carry_the_sdks_own_url_key_and_headers(server: FakeServer, provider: str):
    # Sent past the SDK's per-request machinery, a call still goes where, and as, the SDK
    # would send it: its path below the base URL, the key, its user agent and platform headers.
    async with Engine(provider=provider, api_key="k-1", base_url=base_url(server, provider)) as e:
        await e.single("hi")
    sent = server.requests[-1]
    assert sent.path.endswith("/chat/completions")
    assert sent.headers["authorization"] == "Bearer k-1"
    agent = "AsyncGroq/Python" if provider == "groq" else "AsyncOpenAI/Python"
    assert sent.headers["user-agent"].startswith(agent)
    assert sent.headers["x-stainless-lang"] == "python"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body["stream"] is True and sent.body["messages"][-1]["content"]


async def test_a_refused_call_raises_the_sdks_typed_error_before_it_is_translated(
    server: FakeServer, provider: str
):
    server.enqueue(Fault.status(401))
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        stream = e.client.stream([], max_tokens=5)
        with pytest.raises(Exception) as refused:
            async for _ in stream:
                pass
    # Our error, made from the SDK's AuthenticationError (its status and body kept).
    assert type(refused.value).__name__ == "AuthenticationError"
    assert refused.value.status_code == 401
    assert type(refused.value.__context__).__module__.startswith(provider)


async def test_credentials_in_the_base_url_go_as_basic_auth_as_the_http_client_sends_them(
    server: FakeServer, provider: str
):
    # A gateway's basic auth written into the base URL: httpx's client sends it in place of
    # the key's header, and so must a call sent past that client.
    url = base_url(server, provider).replace("://", "://user:pass@")
    async with Engine(provider=provider, api_key="k", base_url=url, history=False) as e:
        await e.single("hi")
    assert server.requests[-1].headers["authorization"] == "Basic dXNlcjpwYXNz"


async def test_a_redirected_call_is_followed_as_the_sdks_http_client_follows_it(
    server: FakeServer, provider: str
):
    url = base_url(server, provider).rstrip("/") + (
        "/openai/v1/chat/completions" if provider == "groq" else "/chat/completions"
    )
    server.enqueue(Fault.status(307, body="moved", headers={"location": url}), "fine")
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        run = await e.single("hi")
    assert run.answer == "fine"
    assert len(server.requests) == 2
    assert run.calls[0].attempts == 1  # followed, not failed and retried
