"""Reading a chat-completions reply off the wire into our own small `Chunk` type.

The SDKs turn every streamed chunk into a pydantic object, which was most of the client's CPU
at a hundred concurrent runs. The engine reads the raw server-sent events instead (through the
SDK's `with_streaming_response`, which keeps the SDK's auth, base URL, headers and typed HTTP
errors) and keeps only the handful of fields it uses, parsed with orjson.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

_DONE = b"[DONE]"


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
    return Chunk(
        content=part.get("content"),
        reasoning=_reasoning_of(part),
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        model=model,
        timings=timings,
    )


def whole_reply(body: bytes) -> Chunk:
    """The `Chunk` of a non-streamed reply's JSON body."""
    return chunk_of(orjson.loads(body), whole=True)


async def read_chunks(blocks: AsyncIterator[bytes]) -> AsyncIterator[Chunk]:
    """Decode server-sent events from raw bytes and yield one `Chunk` per data event.

    Lines end in LF or CRLF (every chat server we know uses these); an event ends at a blank
    line; `data: [DONE]` ends the stream; comments, `id:` and `retry:` are ignored. An event
    named `error`, or any data carrying an `error` object, raises `StreamErrorEvent`.
    """
    rest = b""
    event = b""
    data: list[bytes] = []
    done = False
    async for block in blocks:
        # After [DONE] the rest of the body is still read (the HTTP stream's end usually comes
        # in the same read): a response closed unread costs its connection, and the next call
        # a new one.
        if done:
            continue
        if rest:
            block = rest + block
        lines = block.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif not line:
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
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
    line = rest.rstrip(b"\r")
    if line.startswith(b"data:"):
        data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    if data:
        payload = b"\n".join(data)
        if payload != _DONE:
            parsed = orjson.loads(payload)
            if event == b"error":
                raise StreamErrorEvent(_error_of(parsed))
            yield chunk_of(parsed)
