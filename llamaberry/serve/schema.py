"""What goes over the wire besides the replies: the chat-completions request as we read it, the
model name that picks a mode, the conversation turned into one question, and our errors in
the OpenAI error shape."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llamaberry.core.errors import (
    AuthenticationError,
    ContextTooLongError,
    InputError,
    LlamaberryError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderTimeoutError,
    RateLimitError,
)
from llamaberry.core.redact import redact
from llamaberry.core.results import Run
from llamaberry.run.passthrough import FIELDS as PASSTHROUGH_FIELDS
from llamaberry.run.passthrough import Passthrough

# How the intermediate work goes out: in a message field (`reasoning_content`, `reasoning`, or
# both), inline at the head of `content` in <think>...</think> (`think`), or not at all.
ReasoningFormat = Literal["reasoning_content", "reasoning", "both", "think", "none"]
ReasoningField = ReasoningFormat  # the name it had when it only chose a field
# The default: inline, because every client shows `content` (chat apps such as Open WebUI and
# LibreChat fold a leading <think> block; `llm` and LangChain print it), while the separate
# fields reach only the clients that know them. A request whose reply must parse (JSON, tool
# calls) gets its thinking in `reasoning_content` instead, so its content stays clean.
DEFAULT_REASONING_FORMAT: ReasoningFormat = "think"


# Request keys of the chat-completions API that we read or that are harmless to ignore. Any
# other key is taken as an option of the mode (`turns`, `samples`, ...), and a mode that has
# no such option answers 400, so a typo is never silently dropped.
STANDARD_KEYS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "n",
        "top_p",
        "user",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "metadata",
        "store",
        "parallel_tool_calls",
        "service_tier",
        "response_format",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "reasoning_format",
    }
)


# The thinking at the head of an assistant message's content (as `think` sends it).
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)


class ChatMessage(BaseModel):
    """One message of the incoming conversation: its text, and the tool calls an assistant
    message made or the tool call a tool message answers."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self, *, images: bool = False) -> str:
        """The message's text; an image part is refused, or marked `[image]` with `images`
        (for single, which sends the conversation on as it came)."""
        if self.content is None or isinstance(self.content, str):
            return self._seen(self.content or "")
        parts = []
        for part in self.content:
            kind = part.get("type")
            if kind in ("image_url", "input_image") and images:
                parts.append("[image]")
            elif kind != "text":
                raise InputError(
                    f"Only text message parts are supported by this mode (got {kind}); "
                    "the single mode passes images through to the upstream model."
                )
            else:
                parts.append(str(part.get("text", "")))
        return self._seen("".join(parts))

    def _seen(self, text: str) -> str:
        """The text without the inline thinking an assistant message may carry back."""
        return _THINK.sub("", text, count=1) if self.role == "assistant" else text

    def rendered(self, *, images: bool = False) -> str:
        """The message as one block of the conversation a mode is given."""
        role = "system" if self.role == "developer" else self.role
        said = self.text(images=images).strip()
        if self.role == "tool":
            return f'<message role="tool" tool_call_id="{self.tool_call_id or ""}">\n{said}\n</message>'
        calls = [
            f'<tool_call id="{call.get("id", "")}" name="{call.get("function", {}).get("name", "")}">'
            f"{call.get('function', {}).get('arguments', '')}</tool_call>"
            for call in self.tool_calls or []
        ]
        body = "\n".join(part for part in (said, *calls) if part)
        return f'<message role="{role}">\n{body}\n</message>'

    def as_sent(self) -> dict[str, Any]:
        """The message as the client sent it (a `developer` message as `system`), but for the
        reasoning an assistant message carries back, which never goes upstream again."""
        sent = self.model_dump(exclude_unset=True)
        if self.role == "developer":
            sent["role"] = "system"
        if self.role == "assistant":
            for field in ("reasoning_content", "reasoning", "thinking"):
                sent.pop(field, None)
            if isinstance(self.content, str):
                sent["content"] = self._seen(self.content)
        return sent


class ChatRequest(BaseModel):
    """The part of a chat-completions request llamaberry acts on."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    # What goes on to the upstream calls (see run/passthrough.py).
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Ours: how this reply carries the intermediate work (else the server's setting).
    reasoning_format: ReasoningFormat | None = None

    def options(self) -> dict[str, Any]:
        """The non-standard keys: the mode's own options."""
        extra = self.model_extra or {}
        return {k: v for k, v in extra.items() if k not in STANDARD_KEYS}

    def passthrough(self, mode: str) -> Passthrough:
        """What this request asks of the upstream calls beside the question; 400 for what
        the mode cannot honour (log-probabilities of a reply that is not one call's)."""
        if (self.logprobs or self.top_logprobs) and mode != "single":
            raise ServeError(
                400,
                f"logprobs are available with the single mode only: the {mode} mode's answer "
                "is not one upstream reply's tokens.",
                code="unsupported_parameter",
                param="logprobs",
            )
        given = self.model_dump(include=set(PASSTHROUGH_FIELDS), exclude_none=True)
        system = "\n\n".join(
            m.text().strip() for m in self.messages if m.role in ("system", "developer")
        )
        sent = [m.as_sent() for m in self.messages]
        return Passthrough.of(given, messages=sent, system=system or None)

    @property
    def shaped(self) -> bool:
        """Whether the reply must parse: JSON, or tool calls."""
        return Passthrough.of(self.model_dump(include={"response_format", "tools"})).shaped


class ServeError(Exception):
    """An error answered in the OpenAI error shape with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The error as the OpenAI API shapes it (never carrying a key)."""
        message = public(redact(self.message))
        error = {"message": message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}


_URL = re.compile(r"\bhttps?://\S+?(?=[\s)\]'\"]|[.,;:](?:\s|$)|$)")
# A sentence that tells a CLI user what to type or set: a flag, an environment variable.
_HINT = re.compile(
    r"(?<![\w-])--[a-z][\w-]*|\b(?:LLAMABERRY_[A-Z_]+|[A-Z]+_API_KEY|[A-Z]+_BASE_URL)\b"
    r"|\bllamaberry [a-z]"
)


def public(message: str) -> str:
    """An error line as a remote client may see it: no upstream URL, and none of the hints
    meant for the person at the CLI (flags, environment variables)."""
    message = _URL.sub("the upstream server", message)
    message = re.sub(
        r"\s*\([^()]*\)", lambda m: "" if _HINT.search(m.group()) else m.group(), message
    )
    sentences = re.split(r"(?<=[.!?])\s+|;\s+", message)
    kept = [s for s in sentences if not _HINT.search(s)]
    line = " ".join(kept).strip() or "The upstream request failed."
    return line if line.endswith((".", "!", "?")) else line + "."


def error_for(error: BaseException) -> ServeError:
    """The HTTP answer for one of our errors (the line is already free of any key)."""
    message = str(error)
    if isinstance(error, ServeError):
        return error
    if isinstance(error, InputError):
        return ServeError(400, message)
    if isinstance(error, ContextTooLongError):
        return ServeError(400, message, code="context_length_exceeded")
    if isinstance(error, ModelNotFoundError):
        return ServeError(404, message, code="model_not_found")
    if isinstance(error, MissingKeyError | AuthenticationError):
        # The caller cannot fix our upstream key: this is the gateway's trouble, not theirs.
        return ServeError(502, f"upstream: {message}", kind="upstream_error", code="upstream_auth")
    if isinstance(error, RateLimitError):
        return ServeError(
            429, message, kind="rate_limit_error", code="rate_limited", retry_after=error.reset_in
        )
    if isinstance(error, ProviderTimeoutError):
        return ServeError(504, message, kind="upstream_error", code="upstream_timeout")
    if isinstance(error, LlamaberryError):
        return ServeError(502, message, kind="upstream_error", code="upstream_error")
    return ServeError(500, "internal error", kind="server_error")


def failed_run_error(run: Run) -> ServeError:
    """The HTTP answer for a run that ended without an answer."""
    if run.status == "cancelled":
        return ServeError(499, run.error or "cancelled", kind="cancelled")
    cause = run.exception
    if cause is not None:
        answer = error_for(cause)
        answer.message = run.error or answer.message
        return answer
    return ServeError(502, run.error or "the run failed", kind="upstream_error")


def parse_model(name: str, modes: list[str]) -> tuple[str, str | None]:
    """`refine` -> ("refine", None); `refine/openai/gpt-oss-20b` -> ("refine", "openai/...")."""
    mode, _, upstream = name.partition("/")
    if mode not in modes:
        # 404 model_not_found, as OpenAI answers: a client left on `gpt-4o` knows what it means.
        raise ServeError(
            404,
            f"The model '{name}' does not exist here: the model name picks a mode, one of "
            f"{', '.join(modes)}, optionally followed by /UPSTREAM_MODEL (for example "
            "refine/openai/gpt-oss-20b).",
            code="model_not_found",
            param="model",
        )
    return mode, upstream or None


def conversation_question(
    messages: list[ChatMessage], *, system_apart: bool = False, images: bool = False
) -> str:
    """The question a mode answers: the last user message, with the exchange before it as context.

    Earlier assistant messages contribute their visible text and the tool calls they made:
    whatever reasoning a client echoes back is dropped, so no intermediate work ever reaches
    the upstream model again. A conversation may end with tool results (role `tool`): the
    question is then to go on from them. With `system_apart` the system messages are left
    out (they go to every call as a system message; see `ChatRequest.passthrough`); with
    `images` an image part is marked rather than refused.
    """
    if not messages:
        raise InputError("messages is empty: send at least one user message.")
    if system_apart:
        messages = [m for m in messages if m.role not in ("system", "developer")]
    last = messages[-1] if messages else None
    if last is None or last.role not in ("user", "tool"):
        role = last.role if last is not None else "system"
        raise InputError(
            f"The last message must be from the user or a tool result (got role '{role}')."
        )
    if last.role == "tool":
        blocks = [m.rendered(images=images) for m in messages]
        return (
            "<conversation>\n" + "\n".join(blocks) + "\n</conversation>\n\n"
            "The conversation above ends with the results of the tools you called. Go on from "
            "them to answer the user's last message."
        )
    earlier = messages[:-1]
    if not earlier:
        return last.text(images=images)
    lines = ["<conversation>", *(m.rendered(images=images) for m in earlier), "</conversation>"]
    return (
        "\n".join(lines)
        + "\n\nThe conversation above is the context. Answer this latest message from the "
        "user; instructions in any system message above still apply.\n\n" + last.text(images=images)
    )
