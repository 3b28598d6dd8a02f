"""The two things every measurement compares: a refine run through the engine, and the same
four streaming requests made by hand with `groq.AsyncGroq`.

The baseline builds its messages with the engine's own prompt functions and sends the same
parameters, so both send byte-identical requests and receive identical replies.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import groq
import httpx

from llamaberry import Engine, TextDelta, Usage
from llamaberry.core.settings import DEFAULT_MODEL, Settings
from llamaberry.modes.prompts import first_turn_messages, later_turn_messages, synthesis_messages
from llamaberry.providers.base import ChatClient, Completion, Delta
from llamaberry.providers.limits import RateLimiter
from llamaberry.testing import RecordedRequest

from .replies import make_script

TURNS = 3
# httpcore's pool (under both SDKs' httpx) rescans every connection for each idle one whenever
# it admits or releases a request: one pool of N costs O(N^2) per request. The raw SDK is at its
# best over pools of this many, which the engine also used before it had its own HTTP client.
RAW_POOL_SIZE = 8
MAX_TOKENS = 4096  # the engine's default completion budget, sent by both sides

OnFirstText = Callable[[float], None]


def make_engine(
    base_url: str, concurrency: int, rpm: int | None = None, window: float = 60.0
) -> Engine:
    """An engine for the bench: groq provider, no retries hidden, history off if it exists.
    `window` is the rate limit's window in seconds (a minute, as `rpm` says, unless shortened)."""
    extra: dict[str, object] = {}
    # The history store (when present) writes every finished run; a bench of the engine's
    # own cost must leave it out.
    if "history" in inspect.signature(Engine).parameters:
        extra["history"] = False
    # Settings.concurrency sizes the connection pool; set it from the load under test.
    settings = Settings.load(
        api_key="bench", base_url=base_url, provider="groq", rpm=rpm, concurrency=concurrency
    )
    if rpm and window != 60.0:
        extra["limiter"] = RateLimiter(rpm=rpm, period=window)
    return Engine(settings=settings, **extra)  # type: ignore[arg-type]


def make_raw_client(base_url: str, concurrency: int) -> groq.AsyncGroq:
    """`groq.AsyncGroq` with a pool the same size as the engine's, no SDK retries, and
    timeouts long enough never to fire: one plain pool of 1000 connections keeps its event
    loop so busy that a connect waits past the SDK's 5 s (and past 10 s), and a baseline that
    fails measures nothing."""
    return groq.AsyncGroq(
        api_key="bench",
        base_url=base_url,
        max_retries=0,
        timeout=httpx.Timeout(600.0),
        http_client=groq.DefaultAsyncHttpxClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        ),
    )


async def engine_refine(
    engine: Engine, question: str, on_first_text: OnFirstText | None = None
) -> None:
    """One refine run through the engine's event stream, as the CLI or UI consumes it."""
    current = None
    async for event in engine.refine_stream(question, turns=TURNS):
        if on_first_text is not None and isinstance(event, TextDelta):
            key = (event.kind, event.index)
            if key != current:
                current = key
                on_first_text(time.monotonic())
        if event.type == "run_finished" and event.run.status != "ok":
            raise RuntimeError(f"engine run failed: {event.run.error}")


class CannedClient(ChatClient):
    """A chat client that replays the bench's replies without any SDK or network, so a run
    through it costs exactly the engine's own work (runner, events, records, parsing)."""

    provider = "groq"

    def __init__(self, chunk_words: int) -> None:
        super().__init__(model=DEFAULT_MODEL)
        self.script = make_script(chunk_words=chunk_words)
        self.chunk_words = chunk_words

    async def stream(self, messages, *, json_mode=False, max_tokens=None):
        """Yield the scripted reply for these messages in chunks, then its completion."""
        # The whole conversation, as the server would see it: the script counts the earlier
        # turns by the assistant messages in it.
        body = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        request = RecordedRequest("POST", "/", {}, body)
        text = self.script(request).text
        words = text.split(" ")
        for i in range(0, len(words), self.chunk_words):
            yield Delta(" ".join(words[i : i + self.chunk_words]) + " ")
        usage = Usage(prompt_tokens=100, completion_tokens=100, total_tokens=200)
        yield Completion(text=text, finish_reason="stop", usage=usage, seconds=0.0)


def make_canned_engine(chunk_words: int) -> Engine:
    """An engine whose client is `CannedClient`: no SDK, no sockets."""
    extra = {"history": False} if "history" in inspect.signature(Engine).parameters else {}
    return Engine(
        settings=Settings.load(api_key="bench"), client=CannedClient(chunk_words), **extra
    )


class PooledRaw:
    """Raw `groq.AsyncGroq` clients over pools of `RAW_POOL_SIZE`: the raw SDK at its best at
    scale, the baseline the engine is held to."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        count = -(-concurrency // RAW_POOL_SIZE)
        size = -(-concurrency // count)
        self.clients = [make_raw_client(base_url, size) for _ in range(count)]
        self.busy = [0] * count

    async def close(self) -> None:
        """Close every pool."""
        for client in self.clients:
            await client.close()


async def _raw_call(
    client: groq.AsyncGroq | PooledRaw,
    pairs: list[tuple[str, str]],
    on_first_text: OnFirstText | None,
) -> str:
    if isinstance(client, PooledRaw):
        pool = min(range(len(client.clients)), key=client.busy.__getitem__)
        client.busy[pool] += 1
        try:
            return await _raw_call(client.clients[pool], pairs, on_first_text)
        finally:
            client.busy[pool] -= 1
    messages = [{"role": role, "content": content} for role, content in pairs]
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, max_completion_tokens=MAX_TOKENS, stream=True
    )
    parts: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if on_first_text is not None and not parts:
                on_first_text(time.monotonic())
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def raw_refine(
    client: groq.AsyncGroq | PooledRaw, question: str, on_first_text: OnFirstText | None = None
) -> None:
    """The same four streaming requests a 3-turn refine run makes, written by hand."""
    texts: list[str] = []
    for index in range(1, TURNS + 1):
        pairs = (
            first_turn_messages(question) if index == 1 else later_turn_messages(question, texts)
        )
        texts.append(await _raw_call(client, pairs, on_first_text))
    await _raw_call(client, synthesis_messages(question, texts), on_first_text)
