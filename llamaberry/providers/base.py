"""The chat-client interface: the one seam between the runs and a provider.

A run only ever calls `ChatClient.stream()` (or `complete()`), which yields `Delta`s of visible
text, `Thinking` the model did apart from its reply, a `Restart` when a failed attempt's partial
text must be discarded, and one `Completion` at the end. Groq and OpenAI-compatible endpoints
are `SDKClient`s (sdk.py); a client of one's own subclasses `ChatClient` and writes `stream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llamaberry.core.errors import ProviderError
from llamaberry.core.results import Message, Usage
from llamaberry.providers.limits import RateLimiter
from llamaberry.providers.retries import RetryPolicy

if TYPE_CHECKING:
    from llamaberry.core.json_reply import JSONSchema, ResponseFormat


@dataclass(frozen=True)
class Delta:
    """A piece of visible reply text."""

    text: str


@dataclass(frozen=True)
class Thinking:
    """A piece of the model's own thinking, sent apart from its reply (or inline in
    `<think>` tags and split out here)."""

    text: str


@dataclass(frozen=True)
class Restart:
    """The attempt failed and is being retried after `wait` seconds: drop any text streamed
    so far."""

    reason: str
    wait: float


@dataclass
class Completion:
    """The whole reply of one call, with what it cost: all of it as the provider said (or, for
    usage a server did not send, as estimated)."""

    text: str
    finish_reason: str | None
    usage: Usage
    seconds: float
    attempts: int = 1
    # The model's own thinking, never part of `text`.
    thinking: str = ""
    # How the reply was asked to be JSON, if it was: the schema, or any JSON object.
    response_format: ResponseFormat | None = None
    # The model the server says answered (llama.cpp names its own, whatever was asked).
    model: str | None = None
    # Seconds the reply waited in the server's queue for a free slot, where the server
    # says how long it really worked on it (llama.cpp's `timings`); else None.
    queued: float | None = None
    # The tools the model called instead of (or beside) its text, in the chat-completions
    # shape: {"id", "type": "function", "function": {"name", "arguments"}}.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # The token log-probabilities the server sent (`choices[0].logprobs.content`), when asked.
    logprobs: list[dict[str, Any]] | None = None

    @property
    def truncated(self) -> bool:
        """True when the reply was cut off by a limit (the budget or the context window)."""
        return self.finish_reason == "length"


StreamItem = Delta | Thinking | Restart | Completion


class ChatClient:
    """A provider endpoint: streams chat completions.

    Subclasses write `stream`; everything else has a default for a client with no endpoint to
    ask (no model list, no context window it can report, nothing to warm or close).
    """

    provider: str = "base"

    def __init__(
        self,
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasoning_effort: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        max_connections: int = 100,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reasoning_effort = reasoning_effort
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter()
        self.max_connections = max_connections
        # The model the endpoint reported answering, once a reply said.
        self.served_model: str | None = None

    def stream(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: JSONSchema | None = None,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Send `messages` and yield the reply as it arrives, ending with its `Completion`.

        With `json_mode` the reply is asked to be a JSON object; with a `schema` too, one of
        that shape. `temperature` overrides the client's for this call. `extra` are fields of
        the chat-completions request sent as given, over the ones the client sets (a client's
        `response_format`, `tools`, `stop`...; see run/passthrough.py); a client of one's own
        that cannot send them may refuse them with `InputError`.
        """
        raise NotImplementedError

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: JSONSchema | None = None,
    ) -> Completion:
        """Send `messages` and return the whole reply."""
        async for item in self.stream(
            messages, json_mode=json_mode, max_tokens=max_tokens, schema=schema
        ):
            if isinstance(item, Completion):
                return item
        raise ProviderError("the provider closed the reply without finishing it")

    async def list_models(self) -> list[str]:
        """The ids of the models this endpoint serves, sorted."""
        raise NotImplementedError(f"the {self.provider} client cannot list models")

    async def resolve_model(self) -> str | None:
        """The model that will really answer, where the endpoint says; else None."""
        return None

    async def context_window(self) -> int | None:
        """The model's context window as the endpoint reports it; None when it does not."""
        return None

    async def server_slots(self) -> int | None:
        """How many requests the server works on at once, where it says; else None."""
        return None

    @classmethod
    def hold(cls, model: str) -> None:
        """Keep what serves `model` up until the process exits, for a surface that builds a
        client per run (nothing here: an endpoint elsewhere runs by itself)."""

    def prepare(self) -> None:
        """Get ready for the first call now, in this thread (nothing to do here)."""

    def warm(self) -> None:
        """Start getting ready for the first call in the background (nothing to do here)."""

    async def ready(self) -> None:
        """Wait for `warm()` to finish, so no call's seconds include it."""

    async def aclose(self) -> None:
        """Let go of what the client holds (nothing here)."""
