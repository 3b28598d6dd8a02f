"""Reading a chat-completions reply off the wire into our own small `Chunk` type, and what a
reply says beside its text: its usage and how long it queued.

The SDKs turn every streamed chunk into a pydantic object, which was most of the client's CPU
at a hundred concurrent runs. The engine reads the raw server-sent events instead (the SDK's
`post` with `cast_to=httpx.Response` hands over the response unread; see sdk.py) and
keeps only the handful of fields it uses, parsed with orjson.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llamaberry.core.results import Usage
from llamaberry.providers.tokens import estimate_tokens

_DONE = b"[DONE]"
# The most one line, or one event's data, of a reply stream may hold: a chunk carries a few
# tokens, and even a server that sends a whole reply as one event stays far below this.
MAX_EVENT_BYTES = 4 << 20


@dataclass(slots=True)
class Chunk:
    """What the engine reads from one streamed chunk (or one whole reply)."""

    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    # As the server sent it: in `x_groq.usage` (Groq) or `usage` (OpenAI and the rest).
    usage: Mapping[str, Any] | None = None
    # The model the server says answered (llama.cpp names its own, whatever was asked).
    model: str | None = None
    # llama.cpp's own account of how long it worked on the reply.
    timings: Mapping[str, Any] | None = None
    # Tool calls: pieces of them in a streamed chunk (by `index`), whole ones in a reply.
    tool_calls: list[Mapping[str, Any]] | None = None
    # The token log-probabilities of this piece (`logprobs.content`), when they were asked for.
    logprobs: list[Any] | None = None


class ReplyTooLarge(Exception):
    """The upstream sent more than a chat reply ever needs (a body, or one event of a stream,
    over its limit)."""


class UnreadableEncoding(Exception):
    """The upstream compressed its reply in an encoding we did not ask for and do not read
    (calls ask for none; gzip and deflate are read anyway, within the size limits)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


class StreamErrorEvent(Exception):
    """The server sent an error as an event inside a stream that had already begun."""

    def __init__(self, error: Any) -> None:
        body = error if isinstance(error, Mapping) else {"message": str(error)}
        super().__init__(str(body.get("message") or "an error inside the reply stream"))
        self.body = body
        code = body.get("code")
        # llama.cpp puts the HTTP status it would have used in `code`; Groq and OpenAI a word.
        self.status_code = code if isinstance(code, int) and 400 <= code < 600 else None


def _reasoning_of(part: Mapping[str, Any]) -> str | None:
    # Groq's parsed format, OpenRouter and newer vLLM say `reasoning`; DeepSeek, llama.cpp's
    # server and older vLLM say `reasoning_content`.
    return part.get("reasoning") or part.get("reasoning_content")


def _error_of(parsed: Any) -> Any:
    return parsed.get("error", parsed) if isinstance(parsed, Mapping) else parsed


def chunk_of(data: Mapping[str, Any], *, whole: bool = False) -> Chunk:
    """The `Chunk` of one parsed chunk, or of a whole (non-streamed) reply when `whole`."""
    if data.get("error"):
        raise StreamErrorEvent(data["error"])
    x_groq = data.get("x_groq")
    usage = (x_groq.get("usage") if isinstance(x_groq, Mapping) else None) or data.get("usage")
    model = data.get("model")
    timings = data.get("timings")
    choices = data.get("choices")
    if not choices:
        return Chunk(usage=usage, model=model, timings=timings)
    choice = choices[0]
    part = choice.get("message" if whole else "delta") or {}
    logprobs = choice.get("logprobs")
    return Chunk(
        content=part.get("content"),
        reasoning=_reasoning_of(part),
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        model=model,
        timings=timings,
        tool_calls=part.get("tool_calls") or None,
        logprobs=logprobs.get("content") if isinstance(logprobs, Mapping) else None,
    )


class ToolCalls:
    """A reply's tool calls put together from the pieces its chunks carry.

    A streamed tool call comes in pieces keyed by `index`: the first names its `id` and the
    function, the rest add to the function's `arguments` string. A whole reply's calls come
    complete, and are kept as they are.
    """

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def feed(self, pieces: list[Mapping[str, Any]]) -> None:
        """Add one chunk's pieces."""
        for position, piece in enumerate(pieces):
            index = piece.get("index", position)
            call = self.calls.setdefault(
                index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if piece.get("id"):
                call["id"] = piece["id"]
            if piece.get("type"):
                call["type"] = piece["type"]
            function = piece.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["function"]["arguments"] += arguments
            elif arguments is not None:  # a server that sends the arguments as an object
                call["function"]["arguments"] += orjson.dumps(arguments).decode()

    def done(self) -> list[dict[str, Any]]:
        """The calls, in their order, each with an id (one is made up where none came)."""
        calls = [self.calls[index] for index in sorted(self.calls)]
        for number, call in enumerate(calls):
            if not call["id"]:
                call["id"] = f"call_{number}"
        return calls


def whole_reply(body: bytes) -> Chunk:
    """The `Chunk` of a non-streamed reply's JSON body."""
    return chunk_of(orjson.loads(body), whole=True)


async def read_chunks(
    blocks: AsyncIterator[bytes], *, max_event: int = MAX_EVENT_BYTES
) -> AsyncIterator[Chunk]:
    """Decode server-sent events from raw bytes and yield one `Chunk` per data event.

    Lines end in LF or CRLF (every chat server we know uses these); an event ends at a blank
    line; `data: [DONE]` ends the stream; comments, `id:` and `retry:` are ignored. An event
    named `error`, or any data carrying an `error` object, raises `StreamErrorEvent`. One line,
    or one event's data, over `max_event` bytes raises `ReplyTooLarge`; a line that spans many
    reads is joined once, when it ends.
    """
    held: list[bytes] = []  # the pieces of a line not ended yet
    held_size = 0
    event = b""
    data: list[bytes] = []
    data_size = 0
    done = False
    async for block in blocks:
        # After [DONE] the rest of the body is still read (the HTTP stream's end usually comes
        # in the same read): a response closed unread costs its connection, and the next call
        # a new one.
        if done:
            continue
        if b"\n" not in block:
            held.append(block)
            held_size += len(block)
            if held_size > max_event:
                raise ReplyTooLarge(f"one line of the reply stream is over {max_event:,} bytes")
            continue
        if held:
            block = b"".join((*held, block))
            held, held_size = [], 0
        lines = block.split(b"\n")
        rest = lines.pop()
        if rest:
            held, held_size = [rest], len(rest)
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"data:"):
                piece = line[6:] if line.startswith(b"data: ") else line[5:]
                data.append(piece)
                data_size += len(piece)
                if data_size > max_event:
                    raise ReplyTooLarge(
                        f"one event of the reply stream is over {max_event:,} bytes"
                    )
            elif not line:
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data, data_size = [], 0
                    if payload == _DONE:
                        done = True
                        break
                    parsed = orjson.loads(payload)
                    if event == b"error":
                        raise StreamErrorEvent(_error_of(parsed))
                    yield chunk_of(parsed)
                event = b""
            elif line.startswith(b"event:"):
                event = line[6:].strip()
    if done:
        return
    # A last event the server closed without its blank line still counts.
    line = b"".join(held).rstrip(b"\r")
    if line.startswith(b"data:"):
        data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    if data:
        payload = b"\n".join(data)
        if payload != _DONE:
            parsed = orjson.loads(payload)
            if event == b"error":
                raise StreamErrorEvent(_error_of(parsed))
            yield chunk_of(parsed)


_OPEN = "<think>"
_CLOSE = "</think>"


def _held_back(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkTags:
    """Splits a reply's inline `<think>...</think>` from its visible text as pieces stream in.

    A tag may arrive split across chunks, so a piece that ends in what could be the start of a
    tag is held back until the next one says. An opening tag counts only before any visible
    text, so a reply that writes `<think>` inside its answer (about HTML, say) is left alone.
    """

    __slots__ = ("held", "inside", "started", "thought")

    def __init__(self) -> None:
        self.inside = False  # within a think block
        self.started = False  # visible text has begun
        self.thought = False  # a think block has opened
        self.held = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """The (is_thinking, text) pieces that `text` completes, in order."""
        if self.started and not self.inside:
            return [(False, text)]  # the common case once the reply is under way
        text = self.held + text
        self.held = ""
        out: list[tuple[bool, str]] = []
        while text:
            if self.inside:
                end = text.find(_CLOSE)
                if end < 0:
                    keep = _held_back(text, _CLOSE)
                    self.held, text = text[len(text) - keep :], text[: len(text) - keep]
                    if text:
                        out.append((True, text))
                    break
                if end:
                    out.append((True, text[:end]))
                self.inside = False
                text = text[end + len(_CLOSE) :]
                continue
            stripped = text.lstrip()
            if stripped.startswith(_OPEN):
                self.inside = self.thought = True
                text = stripped[len(_OPEN) :]
                continue
            if stripped and _OPEN.startswith(stripped):
                self.held = text  # perhaps the start of an opening tag: wait for more
                break
            if stripped:
                self.started = True
                # The answer after a think block starts on a fresh line: drop that gap.
                out.append((False, stripped if self.thought else text))
            else:
                self.held = text  # leading whitespace: visible only if text follows
            break
        return out

    def flush(self) -> list[tuple[bool, str]]:
        """Whatever was held back, once the reply has ended."""
        held, self.held = self.held, ""
        if not held or (not self.started and not self.inside and not held.strip()):
            return []
        return [(self.inside, held)]


def split_thinking(content: str) -> tuple[str, str]:
    """(thinking, visible) of a whole reply whose content may begin with a think block."""
    tags = ThinkTags()
    pieces = tags.feed(content) + tags.flush()
    thinking = "".join(text for is_thinking, text in pieces if is_thinking)
    visible = "".join(text for is_thinking, text in pieces if not is_thinking)
    return thinking, visible


def usage_of(
    reported: Mapping[str, Any] | None,
    text: str,
    prompt: int,
    timings: Mapping[str, Any] | None = None,
) -> Usage:
    """The usage a reply `reported`; when it sent none, an estimate from its `text` and the
    `prompt` tokens estimated for its request. Cached prompt tokens from its
    `prompt_tokens_details` (Groq, OpenAI, vLLM), else llama.cpp's `timings.cache_n`."""
    if reported:
        prompt_tokens = reported.get("prompt_tokens") or 0
        completion = reported.get("completion_tokens") or 0
        total = reported.get("total_tokens") or prompt_tokens + completion
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=total,
            reasoning_tokens=_count(reported.get("completion_tokens_details"), "reasoning_tokens"),
            cached_tokens=min(cached_of(reported, timings), prompt_tokens),
        )
    # Some local servers send no usage at all; an estimate beats a zero in a comparison.
    completion = estimate_tokens(text)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def cached_of(reported: Mapping[str, Any], timings: Mapping[str, Any] | None) -> int:
    """Prompt tokens the server read from its cache, as it reported them; 0 when it did not."""
    cached = _count(reported.get("prompt_tokens_details"), "cached_tokens")
    return cached or _count(timings, "cache_n")


def _count(details: Any, key: str) -> int:
    # A count the server may leave out, send as null, or (a broken one) as something else.
    value = details.get(key) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and value > 0 else 0


def queued_since(sent: float, timings: Any) -> float | None:
    """Seconds a reply waited at the server: its wall time since `sent` less the time the
    server says it worked on it (llama.cpp's `timings`); None when the server does not say."""
    if not isinstance(timings, Mapping):
        return None
    try:
        worked = (
            float(timings.get("prompt_ms") or 0) + float(timings.get("predicted_ms") or 0)
        ) / 1000
    except (TypeError, ValueError):
        return None
    return max(0.0, time.perf_counter() - sent - worked)
