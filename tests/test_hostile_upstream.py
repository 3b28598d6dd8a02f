"""Upstreams that misbehave on purpose, each a small asyncio server on 127.0.0.1 written here: a
body over its size limit (a reply's and an error's), a decompression bomb sent though we asked
for no compression, one event line over its limit. Each call runs in a child process that
reports its peak memory (VmHWM, its address space's high-water mark), which must stay under 300 MB, and the
one line it failed with."""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from llamaberry.providers.streams import MAX_EVENT_BYTES
from llamaberry.providers.transport import MAX_ERROR_BYTES, MAX_REPLY_BYTES

RSS_LIMIT_MB = 300
# A hostile server stops writing after this much whatever happens, so a client that never
# stops reading cannot keep a test running for ever (it then fails on what it received).
SAFETY_CAP = 3 << 30

CHILD = r"""
import asyncio, json, sys, time
from llamaberry.core.results import Message
from llamaberry.providers import make_client
from llamaberry.providers.retries import RetryPolicy

provider, url, kind = sys.argv[1:4]

async def main():
    client = make_client(provider, api_key="k-hostile-test", base_url=url, model="m",
                         retry=RetryPolicy(max_retries=0), timeout=60)
    started = time.monotonic()
    try:
        reply = await client.complete([Message(role="user", content="q")], json_mode=kind == "json")
        out = {"error": None, "text": reply.text[:100]}
    except Exception as error:
        out = {"error": str(error), "type": type(error).__name__}
    out["seconds"] = time.monotonic() - started
    await client.aclose()
    return out

out = asyncio.run(main())
# The peak of this process's own address space. Not getrusage's ru_maxrss: Linux keeps that
# across execve, so a child of a big test process (pytest holding a loaded model) starts at
# the parent's size.
with open("/proc/self/status") as status:
    peak = next(line for line in status if line.startswith("VmHWM:"))
out["rss_mb"] = int(peak.split()[1]) / 1024
print(json.dumps(out))
"""

Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))


async def serve_hostile(write: Writer) -> tuple[asyncio.Server, int]:
    """A server that reads each request and answers it with `write`, until the client goes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            await write(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def run_child(provider: str, port: int, kind: str = "stream") -> dict:
    url = f"http://127.0.0.1:{port}" + ("/v1" if provider == "openai" else "")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        provider,
        url,
        kind,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 180)
    assert child.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def head(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Transfer-Encoding: chunked", *headers, "", ""]
    return "\r\n".join(lines).encode()


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


async def write_forever(
    writer: asyncio.StreamWriter,
    first: bytes,
    pieces: AsyncIterator[bytes],
    most: int = SAFETY_CAP,
) -> None:
    """Send `first`, then `pieces` as chunks until the client goes (or `most` bytes are sent)."""
    writer.write(first)
    sent = 0
    async for piece in pieces:
        writer.write(chunk(piece))
        await writer.drain()
        sent += len(piece)
        if sent > most:
            return


async def repeat(data: bytes) -> AsyncIterator[bytes]:
    while True:
        yield data


async def deflated(data: bytes, wbits: int) -> AsyncIterator[bytes]:
    """`data` repeated for ever, compressed as it goes: a megabyte shrinks to about a
    kilobyte, so a few megabytes sent inflate to gigabytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = data * max(1, (1 << 20) // len(data))
    while True:
        packed = packer.compress(block)
        if packed:
            yield packed


EVENT = b"data: " + orjson.dumps({"choices": [{"delta": {"content": "x" * 1000}}]}) + b"\n\n"
SSE = "Content-Type: text/event-stream"


def assert_bounded(out: dict, *, says: str) -> None:
    assert out["error"] is not None, out
    assert says in out["error"], out
    assert "\n" not in out["error"]
    assert out["rss_mb"] < RSS_LIMIT_MB, out


@pytest.mark.parametrize("provider", ["groq", "openai"])
async def test_a_stream_that_never_stops_is_cut_at_the_reply_limit(provider: str):
    async def write(writer):
        await write_forever(writer, head("200 OK", SSE), repeat(EVENT * 64))

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child(provider, port)
    assert_bounded(out, says=f"the reply is over {MAX_REPLY_BYTES:,} bytes")
    assert out["type"] == "ProviderError"  # not retried: the same request draws the same reply


async def test_a_whole_reply_that_says_it_is_3_gb_is_refused_before_it_is_read():
    async def write(writer):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 3000000000\r\n\r\n" + b'{"choices": [' + b" " * 65536
        )
        await writer.drain()
        await asyncio.sleep(30)

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child("openai", port, "json")
    assert_bounded(out, says="the reply says it is 3,000,000,000 bytes long")
    assert out["seconds"] < 10


async def test_a_whole_reply_with_no_length_is_cut_at_the_reply_limit():
    async def write(writer):
        start = b'{"choices": [{"message": {"content": "'
        await write_forever(
            writer,
            head("200 OK", "Content-Type: application/json") + chunk(start),
            repeat(b"y" * 65536),
        )

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child("groq", port, "json")
    assert_bounded(out, says=f"the reply is over {MAX_REPLY_BYTES:,} bytes")


@pytest.mark.parametrize("provider", ["groq", "openai"])
async def test_an_error_body_that_never_ends_is_read_up_to_its_limit_and_keeps_its_status(
    provider: str,
):
    async def write(writer):
        await write_forever(
            writer,
            head("500 Internal Server Error", "Content-Type: text/plain"),
            repeat(b"z" * 65536),
        )

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child(provider, port)
    assert_bounded(out, says="failed with HTTP 500: zzz")
    assert len(out["error"]) < 500  # the body is cut to its first 300 characters in the line
    assert MAX_ERROR_BYTES < MAX_REPLY_BYTES


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15)])
async def test_a_compressed_stream_we_did_not_ask_for_is_inflated_only_up_to_the_limit(
    encoding: str, wbits: int
):
    async def write(writer):
        headers = head("200 OK", SSE, f"Content-Encoding: {encoding}")
        await write_forever(writer, headers, deflated(EVENT, wbits))

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child("openai", port)
    assert_bounded(out, says=f"the reply is over {MAX_REPLY_BYTES:,} bytes")


async def test_a_gzip_bomb_in_an_error_body_is_cut_at_the_error_limit():
    async def write(writer):
        headers = head(
            "503 Service Unavailable", "Content-Type: text/plain", "Content-Encoding: gzip"
        )
        await write_forever(writer, headers, deflated(b"\0" * 4096, 31))

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child("groq", port)
    assert_bounded(out, says="failed with HTTP 503")


async def test_one_event_line_over_the_limit_fails_fast_with_one_line():
    # 50 MB on one line took 36 s to refuse (the line buffer was copied at every read).
    async def write(writer):
        start = b'data: {"choices": [{"delta": {"content": "'
        await write_forever(writer, head("200 OK", SSE) + chunk(start), repeat(b"w" * 65536))

    server, port = await serve_hostile(write)
    async with server:
        out = await run_child("openai", port)
    assert_bounded(out, says=f"one line of the reply stream is over {MAX_EVENT_BYTES:,} bytes")
    assert out["seconds"] < 10
