"""What a test scripts and reads: `Reply` and `Fault` (what the server answers), the
`RecordedRequest` it keeps, the token count it charges, and how a scripted reply is played
(cut at a budget, held to a schema's limits)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from llamaberry.testing.http import _error

_PARTIAL_TEXT = "partial reply text that will be cut off"


_PIECE_RE = re.compile(r"\S+\s*|\s+")


_WORD_RE = re.compile(r"\S+")


ThinkingForm: TypeAlias = Literal["reasoning", "reasoning_content", "think_tags"]


@dataclass(frozen=True)
class Reply:
    """A scripted successful completion."""

    text: str = ""
    reasoning: str | None = None
    thinking_as: ThinkingForm = "reasoning"
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    latency: float | None = None
    chunk_delay: float | None = None
    chunk_words: int = 1
    headers: dict[str, str] | None = None
    # A looping model: after ``text``, this line again and again until the completion budget
    # (the request's max_completion_tokens / max_tokens, else the context left) runs out.
    repeat: str | None = None
    # Tools the model calls: each {"name": ..., "arguments": dict or JSON text, "id": optional}.
    # The reply then ends with finish_reason "tool_calls" (unless another is scripted), and a
    # request that declared no such tool is refused with 400, as no real model could call it.
    tool_calls: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if any("name" not in call for call in self.tool_calls):
            raise ValueError("each tool call needs a name")
        if self.chunk_words < 1:
            raise ValueError("chunk_words must be at least 1")
        if self.repeat is not None and not self.repeat.strip():
            raise ValueError("repeat must contain a word")


FaultKind: TypeAlias = Literal[
    "status", "drop", "drop_after", "truncate", "hang", "stream_error", "raw"
]


@dataclass(frozen=True)
class Fault:
    """A scripted failure; build one with the ``status``/``drop``/... constructors."""

    kind: FaultKind
    status_code: int = 500
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None
    after: int = 0
    text: str = _PARTIAL_TEXT
    as_event: bool = False
    data: bytes = b""
    keep_open: bool = False
    pause_at: tuple[int, ...] = ()

    @classmethod
    def status(
        cls,
        code: int,
        body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer with this HTTP status; ``body`` is JSON (dict), raw text (str) or a default."""
        return cls("status", status_code=code, body=body, headers=headers)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending any response."""
        return cls("drop")

    @classmethod
    def drop_after(cls, n: int, text: str = _PARTIAL_TEXT) -> Fault:
        """Stream ``n`` content chunks of ``text`` and then cut the connection."""
        return cls("drop_after", after=n, text=text)

    @classmethod
    def truncate(cls, text: str = _PARTIAL_TEXT) -> Fault:
        """Send only part of the body (half the JSON, or half the stream) and then close."""
        return cls("truncate", text=text)

    @classmethod
    def stream_error(
        cls,
        n: int = 2,
        message: str = "Internal Server Error",
        *,
        code: str | int | None = None,
        type: str = "internal_server_error",
        as_event: bool = False,
        text: str = _PARTIAL_TEXT,
    ) -> Fault:
        """Stream ``n`` content chunks of ``text``, then an error inside the stream (HTTP 200).

        By default the error is a data line ``{"error": {...}}``, as Groq and llama.cpp send
        it; with ``as_event`` it is an ``event: error`` event. A non-streamed request gets
        the same error object as a 500.
        """
        body = _error(message, type, code) if code is not None else _error(message, type)
        return cls("stream_error", body=body, after=n, text=text, as_event=as_event)

    @classmethod
    def hang(cls) -> Fault:
        """Accept the request and never answer it."""
        return cls("hang")

    @classmethod
    def raw(cls, data: bytes, *, close: bool = True, pause_at: Iterable[int] = ()) -> Fault:
        """Answer with exactly these bytes (status line, headers and body as written, for
        HTTP framing a client must cope with), then close the connection unless `close` is
        False. The bytes are sent in pieces cut at the offsets `pause_at`, each a moment after
        the last, so the client receives them as separate reads."""
        return cls("raw", data=data, keep_open=not close, pause_at=tuple(sorted(pause_at)))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    # time.monotonic() when the request arrived, and when its reply was fully sent: tests read
    # them to see which requests were in flight together.
    received_at: float = field(default_factory=time.monotonic, compare=False)
    _answered: list[float] = field(default_factory=list, compare=False, repr=False)
    # The TLS version the request came over ("TLSv1.3"), or None for plain HTTP.
    tls: str | None = field(default=None, compare=False)
    # Where a request sent to us as a forward proxy was addressed ("http://host:port"): its
    # target was a whole URL. None for a request addressed to us.
    proxied_for: str | None = field(default=None, compare=False)

    @property
    def answered_at(self) -> float | None:
        """time.monotonic() when a successful reply was fully sent, or None (not yet, or never)."""
        return self._answered[0] if self._answered else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages sent, or ``[]``."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        """The requested model name."""
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        """Whether a streaming reply was requested."""
        return bool(self.body.get("stream"))

    @property
    def json_mode(self) -> bool:
        """Whether ``response_format`` asks for JSON output."""
        fmt = self.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @property
    def response_format(self) -> str | None:
        """The ``response_format`` type asked for (``"json_schema"``, ``"json_object"``...)."""
        fmt = self.body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema sent with a ``json_schema`` response format, if any."""
        fmt = self.body.get("response_format")
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else None

    @property
    def tools(self) -> list[str]:
        """The names of the function tools the request declares."""
        tools = self.body.get("tools")
        if not isinstance(tools, list):
            return []
        return [
            str(tool.get("function", {}).get("name"))
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        ]

    @property
    def max_tokens(self) -> int | None:
        """The completion budget asked for (``max_completion_tokens`` or ``max_tokens``)."""
        budget = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return budget if isinstance(budget, int) and not isinstance(budget, bool) else None

    @property
    def provider(self) -> Literal["groq", "openai"]:
        """``"groq"`` for the ``/openai/v1`` prefix, else ``"openai"``."""
        return "groq" if self.path.startswith("/openai/") else "openai"

    @property
    def system(self) -> str | None:
        """Content of the first system message, if any."""
        for message in self.messages:
            if isinstance(message, dict) and message.get("role") == "system":
                return _content_text(message.get("content"))
        return None

    @property
    def user(self) -> str | None:
        """Content of the last user message, if any."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return None


Scripted: TypeAlias = str | Reply | Fault


Handler: TypeAlias = Callable[[RecordedRequest], Scripted | Awaitable[Scripted | None] | None]


def estimate_prompt_tokens(messages: Iterable[Any]) -> int:
    """Prompt tokens as the fake server counts them: ``ceil(len(content)/4) + 4`` per message."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += math.ceil(len(_content_text(content)) / 4) + 4
    return total


def cached_prefix_tokens(messages: Sequence[Any], earlier: Iterable[Sequence[Any]]) -> int:
    """Prompt tokens of ``messages`` a prompt cache holds after the requests ``earlier``: the
    longest prefix any one of them shares with it, counted as :func:`estimate_prompt_tokens`
    does (whole messages alike, then the characters the next message begins with, a token per
    four). Prompts only, as Groq's and OpenAI's caches hold them: an earlier reply is not."""
    best = 0
    for other in earlier:
        shared = 0
        for mine, theirs in zip(messages, other, strict=False):
            if _role(mine) != _role(theirs):
                break
            a, b = _content_text(_content(mine)), _content_text(_content(theirs))
            if a == b:
                shared += math.ceil(len(a) / 4) + 4
                continue
            same = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            shared += same // 4
            break
        best = max(best, shared)
    return best


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _content(message: Any) -> Any:
    return message.get("content") if isinstance(message, dict) else None


def _content_text(content: Any) -> str:
    # Multimodal messages carry a list of parts; only the text parts count.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _usage(reply: Reply, prompt_tokens: int, charged_budget: int | None) -> dict[str, Any]:
    """The usage a reply reports: its words (reasoning included) as completion tokens, at
    least ``charged_budget`` when given (a reply scripted as cut off), ``Reply.usage`` over all."""
    completion_tokens = _word_count(reply.text) + _word_count(reply.reasoning)
    if charged_budget:
        completion_tokens = max(completion_tokens, charged_budget)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reply.reasoning:
        reasoning_tokens = _word_count(reply.reasoning)
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    if reply.usage:
        usage.update(reply.usage)
        if "total_tokens" not in reply.usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def _word_count(text: str | None) -> int:
    return len(_WORD_RE.findall(text)) if text else 0


def _pieces(text: str, words_per_chunk: int) -> list[str]:
    pieces = _PIECE_RE.findall(text)
    if words_per_chunk == 1:
        return pieces
    return [
        "".join(pieces[i : i + words_per_chunk]) for i in range(0, len(pieces), words_per_chunk)
    ]


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _held_to_schema(reply: Reply, schema: dict[str, Any]) -> Reply:
    """The reply as llama.cpp's grammar lets the model write it: a string property of the
    schema's top-level object that would run past its ``maxLength`` is closed there."""
    try:
        data = json.loads(reply.text)
    except ValueError:
        return reply
    properties = schema.get("properties")
    if not isinstance(data, dict) or not isinstance(properties, dict):
        return reply
    held = dict(data)
    for key, value in data.items():
        limit = properties.get(key, {}).get("maxLength") if isinstance(key, str) else None
        if isinstance(value, str) and isinstance(limit, int) and len(value) > limit:
            held[key] = value[:limit]
    if held == data:
        return reply
    return dataclasses.replace(reply, text=json.dumps(held, ensure_ascii=False))


def _cut_to_budget(reply: Reply, budget: int | None) -> Reply:
    """The reply as a server with this completion budget sends it: cut off at that many words
    (hidden reasoning counts first), with ``finish_reason="length"``."""
    if budget is None or _word_count(reply.text) + _word_count(reply.reasoning) <= budget:
        return reply
    reasoning_words = _PIECE_RE.findall(reply.reasoning or "")
    kept_reasoning = _keep_words(reasoning_words, budget)
    left = budget - _word_count("".join(kept_reasoning))
    kept_text = _keep_words(_PIECE_RE.findall(reply.text), left)
    return dataclasses.replace(
        reply,
        text="".join(kept_text).rstrip() if kept_text else "",
        reasoning="".join(kept_reasoning).rstrip() if reply.reasoning is not None else None,
        finish_reason="length",
    )


def _keep_words(pieces: list[str], words: int) -> list[str]:
    kept: list[str] = []
    count = 0
    for piece in pieces:
        if piece.strip():
            if count >= words:
                break
            count += 1
        kept.append(piece)
    return kept


def tool_call_parts(reply: Reply) -> list[dict[str, Any]]:
    """The reply's tool calls as a chat-completions message lists them."""
    calls = []
    for number, call in enumerate(reply.tool_calls):
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append(
            {
                "id": call.get("id") or f"call_fake{number}",
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
    return calls


def finish_of(reply: Reply) -> str:
    """How the reply ends: as scripted, except that tool calls end a plain one with "tool_calls"."""
    return (
        "tool_calls" if reply.tool_calls and reply.finish_reason == "stop" else reply.finish_reason
    )


def logprobs_of(text: str) -> list[dict[str, Any]]:
    """Made-up log-probabilities for the pieces of `text`, in OpenAI's shape."""
    return [
        {"token": piece, "logprob": -0.5, "bytes": list(piece.encode()), "top_logprobs": []}
        for piece in _pieces(text, 1)
    ]
