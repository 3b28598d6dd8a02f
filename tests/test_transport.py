"""The transport (the SDKs over their aiohttp backend, bounded in providers/transport.py) against
the framings, encodings and connection habits a chat server may have, scripted byte for byte with
`Fault.raw` on the fake server: a response cut at every byte, chunked and length-framed and
close-framed bodies, compression we did not ask for, one connection reused."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import orjson
import pytest

from llamaberry import Engine
from llamaberry.core.errors import ProviderError, ProviderUnavailableError
from llamaberry.core.results import Message
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.openai import OpenAICompatibleClient
from llamaberry.providers.retries import RetryPolicy
from llamaberry.testing import FakeServer, Fault, Reply

MODEL = "openai/gpt-oss-120b"
ONE_RETRY = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05, max_wait=5.0)
NO_RETRY = RetryPolicy(max_retries=0)


def client_for(server: FakeServer, provider: str = "groq", **options):
    options = {"model": MODEL, "retry": ONE_RETRY, **options}
    if provider == "groq":
        return GroqClient(api_key="test-key", base_url=server.groq_base_url, **options)
    return OpenAICompatibleClient(api_key=None, base_url=server.openai_base_url, **options)


def sse(*texts: str, usage: bool = True) -> bytes:
    """A streamed reply's events: one piece of content each, then a finish and [DONE]."""
    events = [{"choices": [{"delta": {"content": text}}], "model": MODEL} for text in texts]
    last: dict = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
    if usage:
        last["usage"] = {"prompt_tokens": 5, "completion_tokens": len(texts)}
    events.append(last)
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def chunked(body: bytes, size: int, *, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    """`body` in chunked transfer encoding, `size` bytes a chunk (sizes in upper-case hex)."""
    parts = [
        b"%X%s\r\n%s\r\n" % (len(body[i : i + size]), extension, body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n" + trailer + b"\r\n"


def response(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


SSE = b"Content-Type: text/event-stream"


async def answer(client, text: str = "q"):
    items = [item async for item in client.stream([Message(role="user", content=text)])]
    return items[-1]


async def test_chat_calls_ask_for_an_uncompressed_reply(server: FakeServer, provider: str):
    client = client_for(server, provider)
    await answer(client, "hi")
    await client.aclose()
    assert server.requests[-1].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("size", [1, 7, 1000])
@pytest.mark.parametrize("trailer", [b"", b"X-Checksum: 1\r\n"])
async def test_a_chunked_reply_is_read_whatever_its_chunks_and_leaves_its_connection_reusable(
    server: FakeServer, size: int, trailer: bytes
):
    body = chunked(sse("caf\u00e9 ", "au ", "lait"), size, extension=b";x=1", trailer=trailer)
    server.enqueue(Fault.raw(response(body, SSE, b"Transfer-Encoding: chunked"), close=False))
    client = client_for(server)
    reply = await answer(client)
    again = await answer(client, "again")
    await client.aclose()
    assert reply.text == "caf\u00e9 au lait" and reply.finish_reason == "stop"
    assert reply.usage.completion_tokens == 3
    assert again.text == "echo: again" and server.connections_opened == 1


async def test_a_reply_that_ends_when_the_server_closes_is_whole_and_its_connection_not_reused(
    server: FakeServer,
):
    # No length and no chunking: an HTTP/1.0-style body that ends with the connection.
    server.enqueue(Fault.raw(response(sse("all ", "of it"), SSE), close=True))
    client = client_for(server)
    first = await answer(client)
    second = await answer(client, "again")
    await client.aclose()
    assert first.text == "all of it" and first.attempts == 1
    assert second.text == "echo: again"
    assert server.connections_opened == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_reply_compressed_although_we_asked_for_none_is_decoded(
    server: FakeServer, encoding: str
):
    body = sse("squeezed ", "words")
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    server.enqueue(
        Fault.raw(
            response(
                chunked(packed, 16),
                SSE,
                b"Content-Encoding: " + encoding.encode(),
                b"Transfer-Encoding: chunked",
            ),
            close=False,
        )
    )
    client = client_for(server)
    reply = await answer(client)
    await client.aclose()
    assert reply.text == "squeezed words"


async def test_a_reply_in_an_encoding_we_do_not_read_fails_once_with_its_own_line(
    server: FakeServer, provider: str
):
    # Brotli (or any encoding but gzip and deflate) is not read: one line that names it, not
    # the line of an oversized reply, and no retry (the same request would come back the same).
    compressed = response(
        chunked(b"\x1b\x03\x00\xf8", 16),
        SSE,
        b"Content-Encoding: br",
        b"Transfer-Encoding: chunked",
    )
    server.enqueue(Fault.raw(compressed, close=False))
    client = client_for(server, provider)
    with pytest.raises(ProviderError) as caught:
        await answer(client)
    await client.aclose()
    line = str(caught.value)
    assert "compressed its reply as 'br', which we did not ask for and do not read" in line
    assert "will not read" not in line and "bytes" not in line
    assert len(server.requests) == 1


async def test_an_interim_response_before_the_real_one_is_skipped(server: FakeServer):
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    real = response(chunked(sse("after ", "hints"), 50), SSE, b"Transfer-Encoding: chunked")
    server.enqueue(Fault.raw(early + real, close=False))
    client = client_for(server)
    reply = await answer(client)
    await client.aclose()
    assert reply.text == "after hints"


async def test_a_whole_json_reply_framed_by_its_length_is_read(server: FakeServer):
    payload = orjson.dumps(
        {
            "choices": [{"message": {"content": '{"a": 1}'}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        }
    )
    headers = (b"Content-Type: application/json", b"Content-Length: %d" % len(payload))
    server.enqueue(Fault.raw(response(payload, *headers), close=False))
    client = client_for(server)
    reply = await client.complete([Message(role="user", content="q")], json_mode=True)
    await client.aclose()
    assert reply.text == '{"a": 1}' and reply.usage.completion_tokens == 2


async def test_a_reply_cut_off_inside_a_chunk_is_retried_on_a_new_connection(server: FakeServer):
    whole = chunked(sse("never ", "finished"), 40)
    cut = response(whole[: len(whole) // 2], SSE, b"Transfer-Encoding: chunked")
    server.enqueue(Fault.raw(cut, close=True), Reply("second try"))
    client = client_for(server)
    reply = await answer(client)
    await client.aclose()
    assert reply.text == "second try" and reply.attempts == 2


async def test_a_malformed_response_fails_with_one_readable_line(server: FakeServer):
    server.enqueue(Fault.raw(b"SPDY/3 200 OK\r\n\r\nnonsense", close=True))
    client = client_for(server, retry=NO_RETRY)
    with pytest.raises(ProviderUnavailableError) as failure:
        await answer(client)
    await client.aclose()
    assert str(failure.value) == (
        f"Could not reach the groq endpoint at {server.groq_base_url}: the connection failed "
        "or was dropped."
    )


async def test_a_connection_the_server_closed_while_idle_is_not_sent_the_next_call(
    server: FakeServer,
):
    # A whole reply on a keep-alive connection, which the server then closes: what an idle
    # timeout on the server looks like from here.
    payload = sse("first")
    server.enqueue(
        Fault.raw(response(payload, SSE, b"Content-Length: %d" % len(payload)), close=True)
    )
    client = client_for(server, retry=NO_RETRY)
    first = await answer(client)
    await asyncio.sleep(0.2)
    second = await answer(client, "next")
    await client.aclose()
    assert (first.text, second.text) == ("first", "echo: next")
    assert second.attempts == 1 and server.connections_opened == 2


async def test_a_reply_that_arrives_faster_than_it_is_read_arrives_whole(server: FakeServer):
    # Reading pauses once a megabyte waits to be read, and resumes as it is read: the reader
    # holds its first piece while three megabytes arrive.
    pieces = ["word " * 1000] * 600
    body = chunked(sse(*pieces), 1 << 16)
    server.enqueue(Fault.raw(response(body, SSE, b"Transfer-Encoding: chunked"), close=False))
    client = client_for(server)
    items = []
    async with asyncio.timeout(60):
        async for item in client.stream([Message(role="user", content="q")]):
            if not items:
                await asyncio.sleep(0.5)
            items.append(item)
    await client.aclose()
    assert items[-1].text == "".join(pieces)


async def test_calls_beyond_the_connection_limit_wait_for_a_free_connection(server: FakeServer):
    server.reply_with(lambda request: Reply("ok", chunk_delay=0.05))
    client = client_for(server, max_connections=3)
    replies = await asyncio.gather(*(answer(client, f"q{i}") for i in range(12)))
    await client.aclose()
    assert [r.text for r in replies] == ["ok"] * 12
    assert server.connections_opened == 3


def test_an_engine_used_from_one_event_loop_then_another_still_answers(fake_server: FakeServer):
    engine = Engine(api_key="k", base_url=fake_server.groq_base_url, history=False)
    first = asyncio.run(engine.single("one"))
    second = asyncio.run(engine.single("two"))
    assert (first.answer, second.answer) == ("echo: one", "echo: two")


@pytest.mark.parametrize("provider", ["groq", "openai"])
def test_a_proxy_named_in_the_environment_carries_every_call(
    fake_server: FakeServer, provider: str, monkeypatch: pytest.MonkeyPatch
):
    # The endpoint's name does not resolve; only a call through the proxy can reach an answer.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fake_server.port}")
    path = "" if provider == "groq" else "/v1"  # groq's SDK adds /openai/v1 itself
    upstream = "http://chat.upstream.invalid:8000"
    engine = Engine(provider=provider, api_key="k", base_url=upstream + path, history=False)
    run = asyncio.run(engine.single("through the proxy"))
    assert run.answer == "echo: through the proxy"
    assert [r.proxied_for for r in fake_server.requests] == [upstream]


async def test_a_response_read_in_two_pieces_cut_anywhere_reads_the_same(server: FakeServer):
    # Wherever a read ends, inside the status line, a header, a chunk-size line, an event or
    # the trailer, the reply is the same and the connection stays fit for the next call.
    body = chunked(sse("cut ", "anywhere"), 60, extension=b";n=1", trailer=b"X-T: 1\r\n")
    data = response(body, SSE, b"Transfer-Encoding: chunked")
    client = client_for(server, retry=NO_RETRY)
    for cut in range(1, len(data)):
        server.enqueue(Fault.raw(data, close=False, pause_at=[cut]))
        reply = await answer(client)
        assert reply.text == "cut anywhere", f"cut at byte {cut}"
    await client.aclose()
    assert server.connections_opened == 1
