"""Typed errors, each with one readable line for the person who ran the command.

`str(error)` is that line. Nothing here ever formats an API key into a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamaberry.core.providers import DEFAULT, PROVIDERS
from llamaberry.core.redact import redact

if TYPE_CHECKING:
    from llamaberry.core.json_reply import ResponseFormat
    from llamaberry.core.results import Run


class LlamaberryError(Exception):
    """Base of every error llamaberry raises on purpose; `str()` is the user-facing line.

    `kind` names what went wrong in one stable word ("context_too_long", "rate_limit",
    "auth"...), so code can branch on it after the exception itself is gone (a saved run,
    `--json`).
    """

    kind: str = "error"

    def __init__(self, *args: object) -> None:
        # A server may echo the key ("Invalid API Key: Bearer gsk_..."); no error keeps it.
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact(super().__str__())


class InputError(LlamaberryError, ValueError):
    """The question or a setting is unusable; no request was sent."""

    kind = "input"


class MissingKeyError(LlamaberryError):
    """No API key where the provider needs one (its row's `needs_key`): Groq always, OpenAI's
    own API (no base URL given); a server of one's own may take none. The line is the row's."""

    kind = "missing_key"

    def __init__(self, provider: str = DEFAULT.name) -> None:
        row = PROVIDERS.get(provider)
        super().__init__(row.missing_key if row and row.missing_key else DEFAULT.missing_key)


class ProviderError(LlamaberryError):
    """The provider refused or failed a request."""

    kind = "provider"
    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(ProviderError):
    """The provider rejected the API key."""

    kind = "auth"


class ModelNotFoundError(ProviderError):
    """The model does not exist at this endpoint or has been retired."""

    kind = "model_not_found"

    def __init__(
        self,
        model: str,
        available: list[str] | None,
        *,
        retired: bool = False,
        status_code: int | None = None,
    ) -> None:
        self.model = model
        self.available = available or []
        self.retired = retired
        what = "has been retired by the provider" if retired else "is not available here"
        listing = (
            "available: " + ", ".join(self.available)
            if self.available
            else "run `llamaberry models` to list what is available"
        )
        super().__init__(
            f"Model '{model}' {what}; {listing}. Choose one with --model or LLAMABERRY_MODEL.",
            status_code=status_code,
        )


class RateLimitError(ProviderError):
    """A provider limit was hit and waiting for it is not worth it (or not allowed)."""

    kind = "rate_limit"

    def __init__(
        self, limit: str, reset_in: float | None, *, detail: str = "", status_code: int = 429
    ) -> None:
        self.limit = limit
        self.reset_in = reset_in
        when = f"; it resets in {format_duration(reset_in)}" if reset_in is not None else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"Rate limited on {limit}{when}{extra}.", status_code=status_code)


class ContextTooLongError(ProviderError):
    """The conversation is longer than the model's context window."""

    kind = "context_too_long"


class ProviderUnavailableError(ProviderError):
    """The endpoint could not be reached or kept failing with server errors."""

    kind = "unavailable"


class ProviderTimeoutError(ProviderError):
    """The provider did not answer within the configured timeout."""

    kind = "timeout"


class RunTimeoutError(LlamaberryError):
    """The whole run took longer than its bound (`run_timeout`); what finished is kept."""

    kind = "timeout"


class InvalidReplyError(ProviderError):
    """The model kept replying in a form we could not use, after every retry."""

    kind = "invalid_reply"


class JSONValidationError(ProviderError):
    """The provider refused its own reply as invalid JSON (`json_validate_failed`)."""

    kind = "invalid_json"

    def __init__(self, message: str, failed_generation: str | None) -> None:
        super().__init__(message, status_code=400)
        self.failed_generation = failed_generation
        self.response_format: ResponseFormat | None = None


class RunFailedError(LlamaberryError):
    """A run stopped on an error; `.run` keeps everything that finished before it.

    `.error` is the typed error that stopped it (also the `__cause__`) and `.kind` its kind,
    so `except RunFailedError as e: if e.kind == "rate_limit": ...` tells a rate limit from a
    context overflow. A refine run that failed late still has its best answer in
    `.run.answer`, with `.run.partial` set.
    """

    def __init__(self, run: Run, error: BaseException | None = None) -> None:
        self.run = run
        self.error = error
        self.kind: str = run.error_kind or (
            error.kind if isinstance(error, LlamaberryError) else "error"
        )
        super().__init__(run.error or "the run failed")


def format_duration(seconds: float) -> str:
    """Render seconds the way people read them: 850ms, 7.7s, 2m59s, 3h12m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
