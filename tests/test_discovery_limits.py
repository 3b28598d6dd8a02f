"""A server of one's own that misbehaves when asked about itself (llama.cpp's `/props`, Ollama's
`/api/show`): an answer far over its size, a decompression bomb sent though we asked for no
compression, an answer that never ends, a redirect loop, and answers that are not what they
should be. Each is a small asyncio server on 127.0.0.1 that chats normally and misbehaves on
those two paths; the window and the slot count are niceties, so each case must end with the
server "saying nothing" (None), the run done, no traceback, and (in a child process, as in
test_hostile_upstream.py) a small peak memory."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from llamaberry.providers.discovery import (
    MAX_DISCOVERY_BYTES,
    MAX_SLOTS,
    MAX_WINDOW,
    slots_from_server,
    window_from_server,
)

from .test_hostile_upstream import chunk, deflated, repeat, write_forever

# What the child may peak at: with the engine and the SDKs imported it peaks at about 145 MB
# here; reading any of these answers whole would take at least 200 MB more.
RSS_LIMIT_MB = 200
# A hostile answer stops after this much whatever the client does (a client that reads on
# unbounded then fails on its memory, not by filling the machine's).
HOSTILE_BYTES = 200 << 20
# The child's timeout: the discovery of a server that never finishes answering waits this long.
CHILD_TIMEOUT = 3.0

CHILD = r"""
import asyncio, json, sys, time
from llamaberry import Engine

url, timeout = sys.argv[1], float(sys.argv[2])

async def main():
    started = time.monotonic()
    engine = Engine(provider="openai", api_key="k-discovery-test", base_url=url, model="m",
                    history=False, timeout=timeout)
    async with engine:
        run = await engine.single("q")
        slots = await engine.client.server_slots()
    return {"answer": run.answer, "window": run.context_window, "slots": slots,
            "seconds": time.monotonic() - started}

out = asyncio.run(main())
with open("/proc/self/status") as status:
    peak = next(line for line in status if line.startswith("VmHWM:"))
out["rss_mb"] = int(peak.split()[1]) / 1024
print(json.dumps(out))
"""

Writer = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]

CLOSE = "Connection: close"
MODELS = orjson.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
EVENTS = (
    b"".join(
        b"data: " + orjson.dumps(event) + b"\n\n"
        for event in (
            {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "fine"}}]},
            {
                "id": "c",
                "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
        )
    )
    + b"data: [DONE]\n\n"
)


def whole(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", CLOSE, *headers, "", ""]
    return "\r\n".join(lines).encode() + body


def chunked(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Transfer-Encoding: chunked", CLOSE, *headers, "", ""]
    return "\r\n".join(lines).encode()


def answer(body: bytes, *headers: str) -> Writer:
    async def write(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(whole("200 OK", body, "Content-Type: application/json", *headers))

    return write


async def not_found(writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(whole("404 Not Found", b"{}"))


async def chat(writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(whole("200 OK", EVENTS, "Content-Type: text/event-stream"))


async def models(writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(whole("200 OK", MODELS, "Content-Type: application/json"))


class Upstream:
    """A chat server on 127.0.0.1 whose `/props` and `/api/show` answer with the writers given
    (404 unless given); it notes each request's first line and headers."""

    def __init__(self, props: Writer = not_found, show: Writer = not_found) -> None:
        self.routes: dict[bytes, Writer] = {
            b"GET /props": props,
            b"POST /api/show": show,
            b"GET /v1/models": models,
            b"POST /v1/chat/completions": chat,
        }
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        await self.server.__aenter__()
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            method, path = head.split(b" ")[:2]
            await self.routes.get(method + b" " + path, not_found)(writer, head)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def asked(self, path: str) -> list[bytes]:
        return [head for head in self.requests if head.split(b" ")[1] == path.encode()]


async def run_child(url: str, timeout: float = CHILD_TIMEOUT) -> dict:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        f"{url}/v1",
        str(timeout),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def assert_says_nothing(out: dict) -> None:
    assert out["answer"] == "fine", out  # the run itself is untouched
    assert out["window"] is None and out["slots"] is None, out
    assert out["rss_mb"] < RSS_LIMIT_MB, out


# -- in a child process, its peak memory measured ---------------------------------------------


async def test_a_props_of_200_mb_is_read_only_up_to_the_bound():
    async def props(writer, request):
        start = b'{"total_slots": 4, "default_generation_settings": {"n_ctx": 4096}, "x": "'
        await write_forever(
            writer,
            chunked("200 OK", "Content-Type: application/json"),
            repeat_first(start, b"a" * 65536),
            HOSTILE_BYTES,
        )

    upstream = Upstream(props=props)
    async with upstream as url:
        out = await run_child(url)
    assert_says_nothing(out)


async def test_a_props_that_says_it_is_200_mb_is_not_read():
    async def props(writer, request):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % HOSTILE_BYTES + b'{"total_slots": 4, "x": "'
        )
        await writer.drain()
        await asyncio.sleep(30)

    # With a long timeout: the body it never sends would hold each question 10 s and 5 s.
    async with Upstream(props=props) as url:
        out = await run_child(url, timeout=60)
    assert_says_nothing(out)
    assert out["seconds"] < 10, out


async def test_a_gzip_bomb_on_props_is_inflated_only_up_to_the_bound():
    async def props(writer, request):
        headers = chunked("200 OK", "Content-Type: application/json", "Content-Encoding: gzip")
        # 256 KB sent inflate to about 256 MB.
        await write_forever(
            writer, headers, deflated(b'{"n_ctx": 4096, "total_slots": 4} ', 31), 256 << 10
        )

    upstream = Upstream(props=props)
    async with upstream as url:
        out = await run_child(url)
    assert_says_nothing(out)
    # ...though it was asked for no compression.
    assert all(b"accept-encoding: identity" in h.lower() for h in upstream.asked("/props"))


async def test_a_props_that_never_ends_is_given_up_at_the_timeout():
    async def props(writer, request):
        writer.write(chunked("200 OK", "Content-Type: application/json") + chunk(b'{"n_ctx": 1'))
        for _ in range(1200):  # a byte every 50 ms for a minute: never a read's timeout
            writer.write(chunk(b"0"))
            await writer.drain()
            await asyncio.sleep(0.05)

    async with Upstream(props=props) as url:
        out = await run_child(url)
    assert_says_nothing(out)
    # The window's question and the slots' each wait at most the timeout (3 s), not a minute.
    assert out["seconds"] < 20, out


async def test_an_oversized_api_show_is_read_only_up_to_the_bound():
    async def show(writer, request):
        start = b'{"parameters": "num_ctx 4096\\n' + b"stop x\\n" * 16
        await write_forever(
            writer,
            chunked("200 OK", "Content-Type: application/json"),
            repeat_first(start, b"y" * 65536),
            HOSTILE_BYTES,
        )

    upstream = Upstream(show=show)
    async with upstream as url:
        out = await run_child(url)
    assert_says_nothing(out)
    assert len(upstream.asked("/api/show")) == 1


async def test_a_redirect_loop_is_not_followed():
    async def loop(writer, request):
        path = request.split(b" ")[1].decode()
        writer.write(whole("302 Found", b"", f"Location: {path}"))

    upstream = Upstream(props=loop, show=loop)
    async with upstream as url:
        out = await run_child(url)
    assert_says_nothing(out)
    assert len(upstream.asked("/props")) == 2  # once for the window, once for the slots
    assert len(upstream.asked("/api/show")) == 1


async def repeat_first(first: bytes, data: bytes) -> AsyncIterator[bytes]:
    yield first
    async for piece in repeat(data):
        yield piece


# -- answers that are not a server's settings, in this process --------------------------------

HEADERS = {"authorization": "Bearer k"}


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"[4096, 4]",
        b'"n_ctx"',
        b'{"default_generation_settings": {"n_ctx": NaN}, "n_ctx": Infinity, "total_slots": NaN}',
        b'{"default_generation_settings": {"n_ctx": 1e999}, "total_slots": 1e999}',
        b'{"n_ctx": 99999999999999999999999999999, "total_slots": 99999999999999999999999}',
        b'{"n_ctx": -4096, "total_slots": -4}',
        b'{"n_ctx": 0, "total_slots": 0}',
        b'{"n_ctx": "4096", "total_slots": true}',
        b'{"default_generation_settings": [4096], "total_slots": 4.5}',
        b'{"n_ctx": %d, "total_slots": %d}' % (MAX_WINDOW + 1, MAX_SLOTS + 1),
    ],
)
async def test_props_that_are_not_settings_say_nothing(body: bytes):
    async with Upstream(props=answer(body)) as url:
        window = await window_from_server(url, "m", HEADERS, 2.0)
        slots = await slots_from_server(url, HEADERS, 2.0)
    assert (window, slots) == (None, None)


@pytest.mark.parametrize(
    "parameters", ["num_ctx 0", "num_ctx 99999999999999999999999", f"num_ctx {MAX_WINDOW + 1}"]
)
async def test_an_absurd_num_ctx_says_nothing(parameters: str):
    body = orjson.dumps({"parameters": parameters})
    async with Upstream(show=answer(body)) as url:
        assert await window_from_server(url, "m", HEADERS, 2.0) is None


async def test_honest_answers_are_read_compressed_or_not():
    # The bounds leave a real server's answers alone, gzip included.
    props = b'{"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4}'
    packed = answer(gzip.compress(props), "Content-Encoding: gzip")
    async with Upstream(props=packed) as url:
        assert await window_from_server(url, "m", HEADERS, 2.0) == 4096
        assert await slots_from_server(url, HEADERS, 2.0) == 4
    show = answer(orjson.dumps({"parameters": "stop x\nnum_ctx    8192\n"}))
    async with Upstream(show=show) as url:
        assert await window_from_server(url, "m", HEADERS, 2.0) == 8192
    # An answer just under the bound is still read.
    padded = props[:-1] + b', "x": "' + b"p" * (MAX_DISCOVERY_BYTES - len(props) - 10) + b'"}'
    assert len(padded) <= MAX_DISCOVERY_BYTES
    async with Upstream(props=answer(padded)) as url:
        started = time.monotonic()
        assert await slots_from_server(url, HEADERS, 2.0) == 4
        assert time.monotonic() - started < 2.0
