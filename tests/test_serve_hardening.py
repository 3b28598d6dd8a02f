"""`llamaberry serve` under hostile clients: each test is a client (or an upstream) written to
misbehave, on 127.0.0.1, against the real app run by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from llamaberry import Engine
from llamaberry.core.errors import InputError
from llamaberry.core.settings import Settings
from llamaberry.engine import MAX_CLIENTS
from llamaberry.serve import Gateway, create_app
from llamaberry.serve import server as serve_server
from llamaberry.serve.server import Connections
from llamaberry.store import Store
from llamaberry.testing import DEFAULT_MODELS, FakeServer, Fault, Reply

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


# -- what a web page could make a browser send ------------------------------------------------


async def serving(upstream: FakeServer, **app_options: object) -> AsyncIterator[int]:
    """`llamaberry serve`'s app under uvicorn on a free 127.0.0.1 port; yields the port."""
    async for port, _ in serving_app(upstream, **app_options):
        yield port


async def serving_app(upstream: FakeServer, **app_options: object) -> AsyncIterator[tuple]:
    """As `serving`, yielding the port and the app."""
    settings = Settings.load(api_key="upstream-secret-key", base_url=upstream.groq_base_url)
    gateway = Gateway(settings)
    app = create_app(settings, gateway=gateway, **app_options)  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        await task


async def raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send `head` (CRLF added) and `body` as they are; the status, headers and body back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    top, _, rest = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in pairs}
    return int(lines[0].split()[1]), headers, rest


def post(port: int, body: bytes, *extra: str, kind: str = "application/json") -> str:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return "\n".join(lines) + "\n"


CHAT = json.dumps({"model": "single", "messages": MESSAGES}).encode()


async def test_a_body_a_page_could_send_without_a_preflight_is_refused(server: FakeServer):
    server.default = Reply("Three.")
    async for port in serving(server):
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            status, _, body = await raw(port, post(port, CHAT, kind=kind), CHAT)
            assert status == 415, body
            assert json.loads(body)["error"]["code"] == "not_json"
        status, _, _ = await raw(
            port, post(port, CHAT, kind="application/json; charset=utf-8"), CHAT
        )
        assert status == 200
    assert len(server.requests) == 1


async def test_a_request_from_an_origin_not_allowed_is_refused(server: FakeServer):
    server.default = Reply("Three.")
    async for port in serving(server):
        for origin in ("https://evil.example", "null", f"http://127.0.0.1:{port}"):
            status, headers, body = await raw(port, post(port, CHAT, f"Origin: {origin}"), CHAT)
            assert status == 403, body
            assert "access-control-allow-origin" not in headers
    assert server.requests == []


async def test_an_allowed_origin_gets_a_preflight_answer_and_its_reply(server: FakeServer):
    server.default = Reply("Three.")
    origin = "https://chat.example"
    async for port in serving(server, cors_origins=[origin]):
        preflight = "\n".join(
            [
                "OPTIONS /v1/chat/completions HTTP/1.1",
                f"Host: localhost:{port}",
                f"Origin: {origin}",
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: authorization, content-type, x-stainless-os",
                "Connection: close",
            ]
        )
        status, headers, _ = await raw(port, preflight + "\n")
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        assert "POST" in headers["access-control-allow-methods"]
        assert "x-stainless-os" in headers["access-control-allow-headers"].lower()
        status, headers, _ = await raw(port, post(port, CHAT, f"Origin: {origin}"), CHAT)
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        # Another origin is still refused, its preflight too.
        other = preflight.replace(origin, "https://evil.example")
        status, headers, _ = await raw(port, other + "\n")
        assert status == 403 and "access-control-allow-origin" not in headers


async def test_a_host_that_is_not_this_machine_is_refused_on_loopback(server: FakeServer):
    server.default = Reply("Three.")
    async for port in serving(server):
        # What a page on a rebinding domain (resolved to 127.0.0.1) makes its browser send.
        rebound = post(port, CHAT).replace(
            f"Host: 127.0.0.1:{port}", f"Host: rebind.example:{port}"
        )
        status, _, body = await raw(port, rebound, CHAT)
        assert status == 421, body
        for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            fine = post(port, CHAT).replace(f"Host: 127.0.0.1:{port}", f"Host: {host}")
            status, _, body = await raw(port, fine, CHAT)
            assert status == 200, body
    assert len(server.requests) == 3
    async for port in serving(server, loopback=False):  # serving beyond: any name reaches it
        rebound = post(port, CHAT).replace(f"Host: 127.0.0.1:{port}", "Host: llm.example")
        assert (await raw(port, rebound, CHAT))[0] == 200


async def test_the_bearer_scheme_is_case_insensitive(server: FakeServer):
    server.default = Reply("Three.")
    async for port in serving(server, api_key="serve-key-1234"):
        for scheme in ("bearer", "BEARER", "Bearer"):
            status, _, body = await raw(
                port, post(port, CHAT, f"Authorization: {scheme} serve-key-1234"), CHAT
            )
            assert status == 200, body
        for wrong in ("Basic serve-key-1234", "Bearer serve-key-123", "Bearerserve-key-1234"):
            status, _, _ = await raw(port, post(port, CHAT, f"Authorization: {wrong}"), CHAT)
            assert status == 401


# -- bounds -----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_before_it_is_read(server: FakeServer):
    async for port in serving(server, max_body=10_000):
        # Declared: refused on the headers alone, the 300 MB never sent.
        status, headers, _ = await raw(
            port, post(port, b"x" * 0).replace("Content-Length: 0", "Content-Length: 300000000")
        )
        assert status == 413 and headers.get("connection") == "close"
        # Chunked: refused once past the limit.
        head = post(port, b"").replace("Content-Length: 0", "Transfer-Encoding: chunked")
        chunk = b"4000\r\n" + b"[" * 0x4000 + b"\r\n"
        status, _, _ = await raw(port, head, chunk * 3 + b"0\r\n\r\n")
        assert status == 413
    assert server.requests == []


async def test_deeply_nested_json_is_a_400_without_a_traceback(
    server: FakeServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    async for port in serving(server):
        for depth in (65, 100_000):
            deep = b"[" * depth + b"]" * depth
            status, _, body = await raw(port, post(port, deep), deep)
            assert status == 400, body
            assert json.loads(body)["error"]["code"] == "too_deep"
        inside = json.dumps({"model": "single", "messages": MESSAGES, "turns": [[[[[1]]]]] * 3})
        status, _, _ = await raw(port, post(port, inside.encode()), inside.encode())
        assert status == 400  # an unknown option, but read: shallow nesting is fine
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert server.requests == []


async def test_a_lone_surrogate_is_a_400_not_an_upstream_error(server: FakeServer):
    server.default = Reply("Three.")
    body = b'{"model": "single", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    async for port in serving(server):
        status, _, answer = await raw(port, post(port, body), body)
        assert status == 400, answer
        assert "surrogate" in json.loads(answer)["error"]["message"]
    assert server.requests == []


# -- connections: how many, and how slow their heads may be -----------------------------------


async def bounded(upstream: FakeServer, connections: Connections) -> AsyncIterator[int]:
    """The app run the way `llamaberry serve` runs it (its uvicorn config, its bounds)."""
    settings = Settings.load(api_key="upstream-secret-key", base_url=upstream.groq_base_url)
    app = create_app(settings, gateway=Gateway(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = serve_server.config(app, host="127.0.0.1", port=0, connections=connections)
    running = serve_server.Server(config, on_stop=app.state.stopping.request)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    while not running.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        running.should_exit = True
        await task


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_slow_headers_are_cut_off_and_connections_are_bounded(
    server: FakeServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    server.default = Reply("Three.")
    book = Connections(limit=20, head_seconds=0.6)
    async for port in bounded(server, book):
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]

        async def trickle(writer: asyncio.StreamWriter) -> None:
            # A slow-loris client: a request line, then one header byte every 0.1 s.
            with contextlib.suppress(ConnectionError):
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    writer.write(b"a")
                    await writer.drain()

        trickling = [asyncio.create_task(trickle(w)) for _, w in opened]
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(closed_within(r, 3) for r, _ in opened))
        took = asyncio.get_running_loop().time() - started
        assert all(results) and took < 2.5
        assert book.refused == 10 and book.timed_out == 20
        for task in trickling:
            task.cancel()
        for _, writer in opened:
            writer.close()
        # An idle connection (nothing sent) is closed too; a real request still gets through.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_within(reader, 2)
        writer.close()
        status, _, _ = await raw(port, post(port, CHAT), CHAT)
        assert status == 200
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


# -- shutdown ---------------------------------------------------------------------------------


_EVENT = (
    b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"Thinking"},"finish_reason":null}]}\n\n'
)
_STARTS_THEN_HANGS = Fault.raw(
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + f"{len(_EVENT):x}\r\n".encode()
    + _EVENT
    + b"\r\n",
    close=False,
)


def start_serve(upstream: FakeServer, home: object) -> tuple[subprocess.Popen[str], int]:
    """`llamaberry serve` in a process of its own over `upstream`, its history in `home`;
    returned once it answers, with its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    env |= {
        "GROQ_API_KEY": "upstream-secret-key",
        "GROQ_BASE_URL": upstream.groq_base_url,
        "LLAMABERRY_HOME": str(home),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaberry", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        time.sleep(0.1)
    return process, port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_streams_in_flight_at_once_and_saves_their_runs_cancelled(
    tmp_path, sig: signal.Signals
):
    # An upstream that starts its reply, one word, and then goes silent: the stream to the
    # client has begun (serve holds it back until a first word, so that a first call refused
    # outright is answered with its own status; see test_serve_clients.py).
    with FakeServer(default=_STARTS_THEN_HANGS) as upstream:
        process, port = start_serve(upstream, tmp_path)
        try:
            body = {"model": "refine", "messages": MESSAGES, "stream": True}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            with httpx.stream("POST", url, json=body, timeout=30) as reply:
                lines = reply.iter_lines()
                first = json.loads(next(line for line in lines if line)[len("data: ") :])
                while not upstream.requests:  # the first turn is asked, and never answered
                    time.sleep(0.05)
                process.send_signal(sig)
                sent = time.monotonic()
                rest = [line for line in lines if line]
                ended = time.monotonic() - sent
            assert ended < 1.5, ended
            last = json.loads(rest[-1][len("data: ") :])
            assert last["error"]["code"] == "shutting_down"
            assert process.wait(10) is not None
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.stderr.read() if process.stderr else ""
        assert "Traceback" not in stderr, stderr
    run = Store(tmp_path / "history.db").get(first["id"].removeprefix("chatcmpl-"))
    assert run.status == "cancelled"


# Sixty words, a fifth of a second apart: a run still answering when the signal comes.
_SLOW_WORDS = " ".join(f"word{n}" for n in range(60))


async def _events_until_shutdown(
    client: openai.AsyncOpenAI, how: str, process: subprocess.Popen[str], upstream: FakeServer
) -> tuple[list[Any], float, openai.APIStatusError]:
    """A streamed response read through the SDK (`create(stream=True)` or the `stream`
    helper), the server signalled after its third word while a response not streamed is in
    flight too: every event, the seconds from the signal to the stream's end, and what the
    response not streamed got."""
    asked = {"model": "single", "input": QUESTION}
    events: list[Any] = []
    waiting: asyncio.Task[Any] | None = None
    sent = 0.0
    async with contextlib.AsyncExitStack() as stack:
        if how == "create":
            streamed = await client.responses.create(**asked, stream=True)
            stream: Any = await stack.enter_async_context(streamed)
        else:
            stream = await stack.enter_async_context(client.responses.stream(**asked))
        async for event in stream:
            events.append(event)
            deltas = [e for e in events if e.type == "response.output_text.delta"]
            if len(deltas) == 3 and waiting is None:
                waiting = asyncio.create_task(client.responses.create(**asked))
                while len(upstream.requests) < 2:  # both runs are asking upstream
                    await asyncio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                sent = time.monotonic()
    ended = time.monotonic() - sent
    assert waiting is not None
    with pytest.raises(openai.APIStatusError) as refused:
        await waiting
    return events, ended, refused.value


@pytest.mark.parametrize("how", ["create", "stream"])
async def test_a_shutdown_ends_a_responses_stream_with_response_failed(tmp_path, how: str):
    # A Responses client reads typed events: the stream a shutdown cuts short ends with
    # response.failed (after what was said, the open message closed), not with a chat
    # completion's bare error, and the SDK reads it without raising.
    with FakeServer(default=Reply(text=_SLOW_WORDS, chunk_delay=0.2)) as upstream:
        process, port = start_serve(upstream, tmp_path)
        try:
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
            )
            events, ended, refused = await _events_until_shutdown(client, how, process, upstream)
            assert await asyncio.to_thread(process.wait, 10) is not None
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.stderr.read() if process.stderr else ""
        assert "Traceback" not in stderr, stderr
    assert ended < 1.5, ended
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds, kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and failed.id == events[0].response.id
    assert failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message.startswith("The server is shutting down"), failed.error.message
    # Every word sent is in the failed response, which stops short of the whole reply; the
    # message was closed (its text done) before the response failed.
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert said.count("word") >= 3 and _SLOW_WORDS.startswith(said) and said != _SLOW_WORDS
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == said
    message = next(item for item in failed.output if item.type == "message")
    assert message.content[0].text == said and message.status == "incomplete"
    assert kinds.index("response.output_item.done") < len(kinds) - 1
    # The response not streamed gets the 503 it got before.
    assert refused.status_code == 503 and refused.code == "shutting_down"
    run = Store(tmp_path / "history.db").get(failed.id.removeprefix("resp_"))
    assert run.status == "cancelled"


# -- redaction --------------------------------------------------------------------------------


async def test_an_upstream_that_echoes_the_key_never_gets_it_to_the_client(server: FakeServer):
    key = "upstream-secret-key"
    echo = f"Your key is {key} and again ({key})."
    async for port in serving(server):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            server.enqueue(Reply(echo, reasoning=f"thinking about {key}"))
            whole = await http.post(
                "/chat/completions", json={"model": "single", "messages": MESSAGES}
            )
            server.enqueue(Reply(echo, reasoning=f"thinking about {key}"))
            body = {"model": "single", "messages": MESSAGES, "stream": True}
            async with http.stream("POST", "/chat/completions", json=body) as streamed:
                text = (await streamed.aread()).decode()
    assert whole.status_code == 200
    assert (
        key not in whole.text and "[redacted]" in whole.json()["choices"][0]["message"]["content"]
    )
    assert key not in text and "[redacted]" in text


KEY = "upstream-secret-key"  # the key `serving` gives the engine for its upstream
SPLITS = [1, len(KEY) // 2, len(KEY) - 1]


def split_key_upstream(at: int, *, escaped: bool) -> Fault:
    """An upstream whose streamed reply has the key cut in two at `at`, once in its reasoning
    and once in its content: the first part ends one event's delta, the rest begins the next.
    With `escaped`, an event with no text comes between the halves, and the rest is written in
    JSON `\\u` escapes (so not one byte of it is the key's as written)."""

    def event(delta: dict[str, str] | str, finish: str | None = None) -> bytes:
        text = json.dumps(delta) if isinstance(delta, dict) else delta
        return (
            b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
            b'"choices":[{"index":0,"delta":'
            + text.encode()
            + b',"finish_reason":'
            + json.dumps(finish).encode()
            + b"}]}\n\n"
        )

    def rest(field: str) -> bytes:
        if not escaped:
            return event({field: KEY[at:] + " stays"})
        written = "".join(f"\\u{ord(c):04x}" for c in KEY[at:])
        return event({field: ""}) + event(f'{{"{field}": "{written} stays"}}')

    body = (
        event({"role": "assistant", "content": ""})
        + event({"reasoning": "I looked at "})
        + event({"reasoning": "the key " + KEY[:at]})
        + rest("reasoning")
        + event({"reasoning": " put away."})
        + event({"content": "Three. The key "})
        + event({"content": "is " + KEY[:at]})
        + rest("content")
        + event({"content": " here, then more words."})
        + event({}, "stop")
        + b"data: [DONE]\n\n"
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    return Fault.raw(head + body, close=True)


THOUGHT = "I looked at the key [redacted] stays put away."
SAID = "Three. The key is [redacted] stays here, then more words."


def shows_no_part_of_the_key(raw: bytes) -> None:
    """No eight characters of the key together (a whole key is `[redacted]`, no half shows)."""
    text = raw.decode()
    seen = [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in text]
    assert not seen, (seen, text)


def sse_events(raw: bytes) -> list[dict]:
    datas = [line[len("data: ") :] for line in raw.decode().splitlines()]
    return [json.loads(d) for d in datas if d.startswith("{")]


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
@pytest.mark.parametrize("at", SPLITS)
@pytest.mark.parametrize("reasoning", ["think", "reasoning_content"])
async def test_a_key_the_upstream_splits_between_two_chunks_never_reaches_the_client(
    server: FakeServer, at: int, escaped: bool, reasoning: str
):
    async for port in serving(server):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            server.enqueue(split_key_upstream(at, escaped=escaped))
            body = {
                "model": "single",
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
                "reasoning_format": reasoning,
            }
            async with http.stream("POST", "/chat/completions", json=body) as streamed:
                raw = await streamed.aread()
    shows_no_part_of_the_key(raw)
    events = sse_events(raw)
    deltas = [(n, e["choices"][0]["delta"]) for n, e in enumerate(events) if e["choices"]]
    # Nothing lost, nothing out of order: the whole text, the key as [redacted] (the thinking
    # inline in the content, or in a field of its own).
    content = "".join(d.get("content") or "" for _, d in deltas)
    if reasoning == "think":
        assert content == f"<think>\n{THOUGHT}\n</think>\n\n{SAID}"
    else:
        assert content == SAID
        assert "".join(d.get("reasoning_content") or "" for _, d in deltas) == THOUGHT
    # What was held back went out before the finish, and the usage came after it.
    finish = next(
        n for n, e in enumerate(events) if e["choices"] and e["choices"][0]["finish_reason"]
    )
    said = [n for n, d in deltas if d.get("content") or d.get("reasoning_content")]
    assert max(said) < finish
    assert "usage" in events[-1] and events[-1]["usage"] and len(events) - 1 > finish
    assert raw.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
@pytest.mark.parametrize("at", SPLITS)
async def test_a_key_split_between_two_chunks_never_reaches_a_responses_client(
    server: FakeServer, at: int, escaped: bool
):
    async for port in serving(server):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            server.enqueue(split_key_upstream(at, escaped=escaped))
            body = {"model": "single", "input": QUESTION, "stream": True}
            async with http.stream("POST", "/responses", json=body) as streamed:
                raw = await streamed.aread()
    shows_no_part_of_the_key(raw)
    events = sse_events(raw)
    kinds = [e["type"] for e in events]

    def joined(kind: str) -> str:
        return "".join(e["delta"] for e in events if e["type"] == kind)

    assert joined("response.output_text.delta") == SAID
    assert joined("response.reasoning_summary_text.delta") == THOUGHT
    # The held-back end of each text went out before that text was closed.
    last_said = max(n for n, k in enumerate(kinds) if k == "response.output_text.delta")
    assert last_said < kinds.index("response.output_text.done") < kinds.index("response.completed")
    last_thought = max(
        n for n, k in enumerate(kinds) if k == "response.reasoning_summary_text.delta"
    )
    assert last_thought < kinds.index("response.reasoning_summary_text.done")
    done = events[kinds.index("response.output_text.done")]
    assert done["text"] == SAID
    output = events[-1]["response"]["output"]
    assert [p["text"] for item in output if item["type"] == "message" for p in item["content"]] == [
        SAID
    ]
    assert [
        p["text"] for item in output if item["type"] == "reasoning" for p in item["summary"]
    ] == [THOUGHT]


NEARLY_THE_KEY = (
    f"Less one: {KEY[:-1]}. Less the first: {KEY[1:]}. A middle run: {KEY[3:16]}. Fine words."
)


def most_of_the_key_upstream(size: int) -> Fault:
    """An upstream whose streamed reply shows most of the key three ways, `size` characters
    to an event."""
    pieces = [NEARLY_THE_KEY[i : i + size] for i in range(0, len(NEARLY_THE_KEY), size)]
    events = [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
    body = b"".join(
        b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
        b'"choices":[{"index":0,"delta":'
        + json.dumps(delta).encode()
        + b',"finish_reason":null}]}\n\n'
        for delta in events
    )
    body += (
        b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    return Fault.raw(head + body, close=True)


@pytest.mark.parametrize("size", [1, 3, 7])
async def test_most_of_the_key_split_between_chunks_never_reaches_the_client(
    server: FakeServer, size: int
):
    async for port in serving(server):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            server.enqueue(most_of_the_key_upstream(size))
            body = {"model": "single", "messages": MESSAGES, "stream": True}
            async with http.stream("POST", "/chat/completions", json=body) as streamed:
                raw = await streamed.aread()
    shows_no_part_of_the_key(raw)
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in sse_events(raw) if e["choices"]
    )
    assert content == (
        "Less one: [redacted]. Less the first: [redacted]. A middle run: [redacted]. Fine words."
    )


def _says_a_key_start_then_hangs(start: str) -> Fault:
    return Fault.raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(
            f"{len(event):x}\r\n".encode() + event + b"\r\n"
            for event in (
                b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
                b'"choices":[{"index":0,"delta":{"content":"Three. The key is '
                + start.encode()
                + b'"},"finish_reason":null}]}\n\n',
            )
        ),
        close=False,
    )


# What the upstream's text ends with, and how it goes out: a start of the key shorter than a
# run of it (MIN_FRAGMENT) as it was written; a longer one is a run of the key, so blanked.
HELD_STARTS = [("upstream-", "upstream-"), ("upstream-sec", "[redacted]")]


@pytest.mark.parametrize(("start", "sent"), HELD_STARTS, ids=["short", "a-run"])
@pytest.mark.parametrize("route", ["chat", "responses"])
async def test_what_was_held_back_goes_out_before_a_shutdown_ends_the_stream(
    server: FakeServer, route: str, start: str, sent: str
):
    # The upstream's text ends with what could begin the key, then it goes silent: that end is
    # held back, and the server's shutdown sends it before the stream's last event (an error
    # event, or response.failed).
    server.default = _says_a_key_start_then_hangs(start)
    if route == "chat":
        path, body = "/chat/completions", {"model": "single", "messages": MESSAGES}
        said = ("choices", 0, "delta", "content")
    else:
        path, body = "/responses", {"model": "single", "input": QUESTION}
        said = ("delta",)

    def text_of(event: dict) -> str:
        for step in said:
            try:
                event = event[step]
            except (KeyError, IndexError, TypeError):
                return ""
        return event if isinstance(event, str) else ""

    async for port, app in serving_app(server):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
            lines: list[str] = []
            async with http.stream("POST", path, json=body | {"stream": True}) as streamed:
                async for line in streamed.aiter_lines():
                    lines.append(line)
                    if "Three. The key is" in line:
                        app.state.stopping.request()
    events = sse_events("\n".join(lines).encode())
    if route == "chat":
        assert events[-1]["error"]["code"] == "shutting_down"
    else:  # a Responses stream ends as a failed response (see the test above)
        assert events[-1]["type"] == "response.failed"
        assert "shutting down" in events[-1]["response"]["error"]["message"]
    assert "".join(text_of(e) for e in events[:-1]) == "Three. The key is " + sent
