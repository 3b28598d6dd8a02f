"""What goes over the wire besides the replies: the chat-completions request as we read it, the
model name that picks a mode, the conversation turned into one question, and our errors in
the OpenAI error shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

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

ReasoningField = Literal["reasoning_content", "reasoning", "both"]


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
    }
)


class ChatMessage(BaseModel):
    """One message of the incoming conversation (only its text is used)."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text; image or audio parts are refused."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise InputError(f"Only text message parts are supported (got {part.get('type')}).")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


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
    n: int | None = None

    def options(self) -> dict[str, Any]:
        """The non-standard keys: the mode's own options."""
        extra = self.model_extra or {}
        return {k: v for k, v in extra.items() if k not in STANDARD_KEYS}


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The error as the OpenAI API shapes it (never carrying a key)."""
        message = redact(self.message)
        return {"error": {"message": message, "type": self.kind, "param": None, "code": self.code}}


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
        raise ServeError(
            400,
            f"Unknown model '{name}': the model name picks a mode, one of {', '.join(modes)}, "
            "optionally followed by /UPSTREAM_MODEL (for example refine/openai/gpt-oss-20b).",
            code="unknown_mode",
        )
    return mode, upstream or None


def conversation_question(messages: list[ChatMessage]) -> str:
    """The question a mode answers: the last user message, with the exchange before it as context.

    Earlier assistant messages contribute their visible text only: whatever reasoning a client
    echoes back is dropped, so no intermediate work ever reaches the upstream model again.
    """
    if not messages:
        raise InputError("messages is empty: send at least one user message.")
    last = messages[-1]
    if last.role != "user":
        raise InputError(f"The last message must be from the user (got role '{last.role}').")
    earlier = messages[:-1]
    if not earlier:
        return last.text()
    lines = ["<conversation>"]
    for message in earlier:
        role = "system" if message.role == "developer" else message.role
        lines.append(f'<message role="{role}">\n{message.text().strip()}\n</message>')
    lines.append("</conversation>")
    return (
        "\n".join(lines)
        + "\n\nThe conversation above is the context. Answer this latest message from the "
        "user; instructions in any system message above still apply.\n\n" + last.text()
    )
