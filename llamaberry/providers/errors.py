"""Turning an SDK's or HTTP library's exception into one of our typed errors, with one readable
line that says what happened and what to do.

One place decides: a refusal is read from the SDK's `APIStatusError` (its documented
`status_code`, `body` and `response`) by status code and the body's error code; a call that got no
answer is matched by type against `Failures`, one table of the public exception types of the SDK
(`APITimeoutError`, `APIConnectionError`), of the httpx module under it (groq's httpx, openai's
fork httpx2) and of aiohttp, each with what it means.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from llamaberry.core.errors import (
    AuthenticationError,
    ContextTooLongError,
    JSONValidationError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from llamaberry.core.redact import redact
from llamaberry.providers.limits import parse_duration
from llamaberry.providers.streams import ReplyTooLarge, StreamErrorEvent, UnreadableEncoding

if TYPE_CHECKING:
    import ssl


class SchemaRefusedError(ProviderError):
    """The endpoint or model does not take `response_format` of type `json_schema`."""


@dataclass(frozen=True)
class Endpoint:
    """What an error line names: the provider, where it was reached, the model asked."""

    provider: str
    model: str
    url: str  # the SDK's base URL; empty before the SDK client is built
    timeout: float
    key_variable: str  # where the key is set, for a rejected key's line
    models: list[str] | None = None  # the endpoint's model list, when it was read

    def where(self) -> str:
        """The endpoint, as an error line names it."""
        return f"the {self.provider} endpoint" + (f" at {self.url}" if self.url else "")


def timed_out(provider: str, timeout: float) -> str:
    """The line for a call that ran past its `timeout`."""
    return (
        f"{provider} did not answer within {timeout:g}s (--timeout, which bounds "
        "each call from its first send to its last token, retries included)."
    )


# What a call that got no answer means: a function from the error and its endpoint to our error.
NoAnswer = Callable[[Exception, "Endpoint"], ProviderError]


@dataclass(frozen=True)
class Failures:
    """The exception types one SDK's calls raise, and what each means (see `failures_of`)."""

    refused: type[Any]  # the SDK's APIStatusError: the endpoint answered with an HTTP error
    no_answer: tuple[tuple[tuple[type[BaseException], ...], NoAnswer], ...]  # first match wins

    def status_of(self, error: Exception) -> int | None:
        """The HTTP status `error` carries, if it is the endpoint's refusal."""
        return error.status_code if isinstance(error, self.refused) else None

    def meaning(self, error: Exception) -> NoAnswer:
        """What a failure with no HTTP status means, by the first type in the table it is."""
        for kinds, meaning in self.no_answer:
            if isinstance(error, kinds):
                return meaning
        return _other_failure


@functools.cache
def failures_of(sdk: ModuleType, http: ModuleType) -> Failures:
    """The table for one SDK (`groq`, `openai`) over its httpx module (`httpx`, `httpx2`).

    The SDK wraps what its HTTP library raises while sending; what is raised while a reply's
    body is read comes from the httpx module as is (translated from aiohttp's by the backend);
    aiohttp's own and the OS's are there for anything that reaches us unwrapped.
    """
    import aiohttp

    return Failures(
        refused=sdk.APIStatusError,
        no_answer=(
            ((http.InvalidURL, http.UnsupportedProtocol), _unusable_url),
            ((http.ConnectTimeout,), _connect_timed_out),
            ((sdk.APITimeoutError, http.TimeoutException, TimeoutError), _call_timed_out),
            ((sdk.APIConnectionError, http.HTTPError, aiohttp.ClientError, OSError), _unreachable),
        ),
    )


def translate(error: Exception, endpoint: Endpoint, failures: Failures) -> ProviderError:
    """Turn an SDK exception into one of our typed errors with a readable line."""
    refused = _certificate_refusal(error)
    if refused is not None:  # not retried: a certificate that failed will fail again
        return _untrusted(refused, endpoint)
    too_large = _in_chain(error, ReplyTooLarge)
    if too_large is not None:  # not retried: the same request would draw the same reply
        return ProviderError(f"{endpoint.where()} sent a reply we will not read: {too_large}.")
    encoded = _in_chain(error, UnreadableEncoding)
    if isinstance(encoded, UnreadableEncoding):  # not retried either: it would come the same way
        return ProviderError(
            f"{endpoint.where()} compressed its reply as {encoded.encoding!r}, which we did not "
            "ask for and do not read (calls ask for an uncompressed reply); a proxy in between "
            "may be compressing it."
        )
    status = failures.status_of(error)
    if status is None and not isinstance(error, StreamErrorEvent):
        return failures.meaning(error)(error, endpoint)
    code, message = _error_details(error)
    if status == 401:
        return AuthenticationError(
            f"{endpoint.provider} rejected the API key (HTTP 401); check {endpoint.key_variable}.",
            status_code=401,
        )
    if code in ("model_not_found", "model_decommissioned") or (
        status == 404 and "model" in message.lower()
    ):
        return ModelNotFoundError(
            endpoint.model,
            endpoint.models,
            retired=code == "model_decommissioned",
            status_code=status,
        )
    if code == "json_validate_failed":
        failed = _find(getattr(error, "body", None), "failed_generation")
        return JSONValidationError(message or "invalid JSON", failed)
    if _too_long(error, code, message):
        said = f" ({endpoint.provider} said: {_first_line(message)})" if message else ""
        return ContextTooLongError(
            f"The request is longer than the model's context window{said}; "
            "ask a shorter question or use fewer --turns.",
            status_code=status,
        )
    if code == "rate_limit_exceeded" and status is None:
        status = 429
    if status is None:  # an error event inside a stream: most often a passing server fault
        return ProviderUnavailableError(
            f"{endpoint.where()} sent an error in the middle of its reply: "
            + _first_line(message or str(error))
        )
    return _by_status(status, message, _headers_of(error), endpoint)


def refuses_schema(error: Exception, failures: Failures) -> bool:
    """Whether an SDK error is the endpoint refusing `response_format` of type json_schema.

    Groq says "This model does not support response format `json_schema`", OpenAI names the
    parameter ("param": "response_format"), older llama.cpp servers say the type must be
    "text" or "json_object"; some servers answer 422 for a field they do not know.
    """
    if failures.status_of(error) not in (400, 422):
        return False
    code, message = _error_details(error)
    if code == "json_validate_failed":
        return False  # the schema was taken; the model's reply did not fit it
    param = _find(getattr(error, "body", None), "param")
    text = f"{param} {message}".lower().replace("_", " ")
    return "response format" in text or "json schema" in text


# -- the kinds of failure ------------------------------------------------------------------------

# How servers say "too long": Groq's and OpenAI's error code, llama.cpp's error type, and the
# words of OpenAI and vLLM ("maximum context length"), llama.cpp ("exceeds the available
# context size") and Ollama ("the input length exceeds the context length").
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_WORDS = (
    "context length",
    "context size",
    "context window",
    "reduce the length of the messages",
)

# OpenSSL's verify codes for a certificate that names another host (X509_V_ERR_HOSTNAME_MISMATCH,
# _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH): trusting another CA would not help.
_NAME_MISMATCH = frozenset({62, 63, 64})


def _untrusted(refused: ssl.SSLCertVerificationError, endpoint: Endpoint) -> ProviderError:
    reason = str(refused.verify_message or refused.reason or "").rstrip(".")
    fix = (
        "it names another host, so check the host in the base URL."
        if refused.verify_code in _NAME_MISMATCH
        else "if the endpoint uses a private CA, set SSL_CERT_FILE to that CA's PEM file."
    )
    return ProviderError(
        f"Could not verify the TLS certificate of {endpoint.where()}"
        + (f" ({reason})" if reason else "")
        + f"; {fix}"
    )


def _unusable_url(error: Exception, endpoint: Endpoint) -> ProviderError:
    return ProviderError(f"{endpoint.provider}: the base URL is not usable: {error}")


def _connect_timed_out(error: Exception, endpoint: Endpoint) -> ProviderError:
    return ProviderTimeoutError(f"Could not connect to {endpoint.where()} in time.")


def _call_timed_out(error: Exception, endpoint: Endpoint) -> ProviderError:
    return ProviderTimeoutError(timed_out(endpoint.provider, endpoint.timeout))


def _unreachable(error: Exception, endpoint: Endpoint) -> ProviderError:
    return ProviderUnavailableError(
        f"Could not reach {endpoint.where()}: the connection failed or was dropped."
    )


def _other_failure(error: Exception, endpoint: Endpoint) -> ProviderError:
    return ProviderUnavailableError(f"{endpoint.provider}: {type(error).__name__}: {error}")


def _too_long(error: Exception, code: str, message: str) -> bool:
    kind = str(_find(getattr(error, "body", None), "type") or "")
    lowered = message.lower()
    return bool({code, kind} & _CONTEXT_CODES) or any(w in lowered for w in _CONTEXT_WORDS)


def _by_status(
    status: int, message: str, headers: Mapping[str, str], endpoint: Endpoint
) -> ProviderError:
    """A refusal read from its HTTP status alone."""
    if status in (413, 429):
        return _rate_limit_error(status, message, headers)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailableError(
            f"{endpoint.where()} failed with HTTP {status}"
            + (f": {_first_line(message)}" if message else "."),
            status_code=status,
        )
    if status == 404:
        return ProviderError(
            f"{endpoint.where()} answered 404 Not Found; check the base URL.", status_code=404
        )
    return ProviderError(
        f"{endpoint.provider} refused the request (HTTP {status}): {_first_line(message)}",
        status_code=status,
    )


def _rate_limit_error(status: int, message: str, headers: Mapping[str, str]) -> RateLimitError:
    lowered = message.lower()
    if "tokens per day" in lowered or "(tpd)" in lowered:
        limit = "tokens per day"
    elif "requests per day" in lowered or "(rpd)" in lowered:
        limit = "requests per day"
    elif "tokens per minute" in lowered or "(tpm)" in lowered:
        limit = "tokens per minute"
    elif "requests per minute" in lowered or "(rpm)" in lowered:
        limit = "requests per minute"
    else:
        limit = "the provider's rate limit"
    if status == 413:
        return RateLimitError(
            limit,
            None,
            detail="one request is larger than the limit allows; lower --max-tokens or shorten it",
            status_code=413,
        )
    reset = parse_duration(headers.get("retry-after"))
    if reset is None:
        key = "tokens" if "token" in limit else "requests"
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{key}"))
    return RateLimitError(limit, reset)


# -- reading an error ---------------------------------------------------------------------------


def _certificate_refusal(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The ssl error saying the server's certificate was not trusted, when `error` comes down
    to one: the SDKs wrap it twice (APIConnectionError from httpx's ConnectError, raised from
    httpcore's, whose context is the ssl error); a plain asyncio connection raises it as is."""
    import ssl  # only on an error: the CLI's start-up does not pay for it

    # aiohttp's ClientConnectorCertificateError is one too, without ssl's details; the ssl
    # error it wraps is its cause.
    refused = _in_chain(error, ssl.SSLCertVerificationError, having="verify_code")
    return refused if isinstance(refused, ssl.SSLCertVerificationError) else None


def _in_chain(error: BaseException, kind: type, *, having: str = "") -> BaseException | None:
    """The first exception of type `kind` (with an attribute `having`, if named) among `error`
    and what it was raised from: the SDKs wrap their HTTP library's errors, and that library
    the one underneath."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind) and (not having or hasattr(cause, having)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _find(body: Any, key: str) -> Any:
    if isinstance(body, Mapping):
        if key in body:
            return body[key]
        inner = body.get("error")
        if isinstance(inner, Mapping):
            return inner.get(key)
    return None


def _error_details(error: Exception) -> tuple[str, str]:
    body = getattr(error, "body", None)
    code = _find(body, "code") or getattr(error, "code", None) or ""
    message = _find(body, "message") or ""
    if not message and isinstance(body, str):
        message = body
    return str(code), str(message)


def _headers_of(error: Exception) -> Mapping[str, str]:
    response = getattr(error, "response", None)
    return getattr(response, "headers", None) or {}


def _first_line(text: str) -> str:
    """The first line of an upstream's message, redacted, then cut to 300 characters (in that
    order: a key cut in two would not be found, and its first part would be shown)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return redact(line)[:300]
