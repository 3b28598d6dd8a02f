"""Chat clients: the one seam between the modes and a provider's SDK.

The modes only ever call `ChatClient.stream()` (or `complete()`), which yields `Delta`s of
visible text, a `Restart` when a failed attempt's partial text must be discarded, and one
`Completion` at the end. Groq and OpenAI-compatible endpoints are two small subclasses; the
SDKs are imported lazily so the CLI starts fast.

Retries are decided here and nowhere else: the SDKs' own retries are switched off, so the two
never multiply.
"""

from __future__ import annotations

import _thread
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import importlib
import logging
import os
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from llamaberry.core.errors import (
    AuthenticationError,
    ContextTooLongError,
    InputError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from llamaberry.core.redact import remember
from llamaberry.core.results import CutOffBy, Message, Usage
from llamaberry.core.settings import check_base_url
from llamaberry.providers.limits import RateLimiter, Slot, estimate_tokens, parse_duration
from llamaberry.providers.streams import (
    StreamErrorEvent,
    ThinkTags,
    read_chunks,
    split_thinking,
    whole_reply,
)
from llamaberry.providers.wire import Pool, Transport

if TYPE_CHECKING:
    import ssl

    from pydantic import BaseModel

log = logging.getLogger("llamaberry")

PROVIDERS = ("groq", "openai", "local")
# Where the openai SDK sends requests when no base URL is given.
OPENAI_API_URL = "https://api.openai.com/v1"
# A new connection must be made within this many seconds when little else is going on...
CONNECT_TIMEOUT = 10.0
# ...and this much longer for every call in flight: one event loop opening a burst of connections
# (a thousand runs started at once) serves them one by one, each a socket and, on a real
# endpoint, a TLS handshake of its own; on a busy machine the last waited past 10 s and was
# retried (194 of 4000 calls at load 13), though nothing was wrong with the endpoint.
CONNECT_TIMEOUT_PER_CALL = 0.05


def connect_timeout(in_flight: int, timeout: float) -> float:
    """Seconds a call may take to open a connection with `in_flight` calls under way (itself
    included), never more than the call's whole `timeout`."""
    return min(timeout, CONNECT_TIMEOUT + CONNECT_TIMEOUT_PER_CALL * max(0, in_flight - 1))


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
    """The whole reply of one call, with what it cost."""

    text: str
    finish_reason: str | None
    usage: Usage
    seconds: float
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    # The model's own thinking, never part of `text`.
    thinking: str = ""
    # How the reply was asked to be JSON, if it was: the schema, or any JSON object.
    response_format: ResponseFormat | None = None
    # The model the server says answered (llama.cpp names its own, whatever was asked).
    model: str | None = None
    # Seconds the reply waited in the server's queue for a free slot, where the server
    # says how long it really worked on it (llama.cpp's `timings`); else None.
    queued: float | None = None
    # Set by the run, not the provider: the loop guard stopped the reply (`text` keeps what
    # came before the loop), and which limit a reply that ended in "length" ran into.
    looped: bool = False
    cut_off_by: CutOffBy | None = None

    @property
    def truncated(self) -> bool:
        """True when the reply was cut off by a limit (the budget or the context window)."""
        return self.finish_reason == "length"

    def result_fields(self) -> dict[str, Any]:
        """The fields every call result (`results.CallResult`) shares, as this reply sets them."""
        return {
            "content": self.text,
            "truncated": self.truncated,
            "cut_off_by": self.cut_off_by,
            "looped": self.looped,
            "thinking": self.thinking,
            "usage": self.usage,
            "seconds": self.seconds,
        }


StreamItem = Delta | Thinking | Restart | Completion

ResponseFormat = Literal["json_schema", "json_object"]

# Keywords every strict structured-output implementation takes (OpenAI's and Groq's strict
# mode refuse others, such as minLength); a schema is cut down to these before it is sent.
_STRICT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "enum", "items"}
)


# What a server that compiles the whole schema into a grammar (llama.cpp) also enforces: without
# minLength a small model can close a step with an empty "content".
_GRAMMAR_KEYWORDS = _STRICT_KEYWORDS | {"minLength", "maxLength", "minItems", "maxItems"}


@dataclass(frozen=True)
class JSONSchema:
    """The shape a reply must have, sent as `response_format={"type": "json_schema", ...}`.

    `schema` keeps to what strict mode takes everywhere; `grammar` adds the length limits, for
    a server known to enforce them (llama.cpp, the `local` provider).
    """

    name: str
    schema: dict[str, Any]
    grammar: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: type[BaseModel], name: str) -> JSONSchema:
        """The strict-mode schema of a pydantic model: every key required, no other keys."""
        full = model.model_json_schema()
        return cls(name, _strict(full, _STRICT_KEYWORDS), _strict(full, _GRAMMAR_KEYWORDS))

    def response_format(
        self, *, lengths: bool = False, budget: int | None = None
    ) -> dict[str, Any]:
        """The `response_format` request parameter (with the length limits if `lengths`,
        lowered where needed so the whole object fits a reply of `budget` tokens)."""
        schema = self.grammar if lengths and self.grammar else self.schema
        if lengths and budget:
            schema = _fit_lengths(schema, budget)
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "strict": True, "schema": schema},
        }


# Tokens a reply's keys, quotes and spacing take besides its string values.
_OBJECT_OVERHEAD = 48


def _fit_lengths(schema: dict[str, Any], budget: int) -> dict[str, Any]:
    """`schema` with its top-level string `maxLength`s scaled down together so that, at one
    character a token (digits and symbols, the densest text a small model runs away with),
    the whole object still closes within `budget` tokens: the grammar ends a runaway field,
    not the budget, which would cut the JSON off."""
    properties = schema.get("properties") or {}
    limits = {
        key: value["maxLength"]
        for key, value in properties.items()
        if isinstance(value, dict) and isinstance(value.get("maxLength"), int)
    }
    room = max(budget - _OBJECT_OVERHEAD, len(limits))
    total = sum(limits.values())
    if not limits or total <= room:
        return schema
    fitted = dict(properties)
    for key, limit in limits.items():
        low = properties[key].get("minLength", 0)
        fitted[key] = {**properties[key], "maxLength": max(limit * room // total, low, 1)}
    return {**schema, "properties": fitted}


def _strict(schema: dict[str, Any], keywords: frozenset[str]) -> dict[str, Any]:
    out = {key: value for key, value in schema.items() if key in keywords}
    if "properties" in out:
        out["properties"] = {
            key: _strict(value, keywords) for key, value in out["properties"].items()
        }
        # Strict mode wants every property listed as required and nothing else allowed.
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"], keywords)
    return out


class JSONValidationError(ProviderError):
    """The provider refused its own reply as invalid JSON (`json_validate_failed`)."""

    kind = "invalid_json"

    def __init__(self, message: str, failed_generation: str | None) -> None:
        super().__init__(message, status_code=400)
        self.failed_generation = failed_generation
        self.response_format: ResponseFormat | None = None


class SchemaRefusedError(ProviderError):
    """The endpoint or model does not take `response_format` of type `json_schema`."""


@dataclass
class RetryPolicy:
    """Whether, and after how long, a failed call is tried again: the one place that decides."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    # A 429 whose retry-after is longer than this fails at once with the reset time.
    max_wait: float = 90.0

    def delay(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when `error` is final."""
        if attempt > self.max_retries:
            return None
        if isinstance(error, RateLimitError):
            if error.status_code == 413:  # the request alone exceeds the limit: waiting won't help
                return None
            if error.reset_in is not None:
                return error.reset_in if error.reset_in <= self.max_wait else None
            return self.backoff(attempt)
        if isinstance(error, ProviderUnavailableError | ProviderTimeoutError):
            return self.backoff(attempt)
        return None

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, for errors that don't say how long to wait."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class Deadline:
    """A deadline checked at many awaits, by one timer: `with deadline: await ...` raises
    `TimeoutError` when the deadline passes during the await (or had passed before it and the
    await pauses).

    Time spent between those awaits (a consumer's, with an item in hand) is never interrupted.
    `asyncio.timeout` per await does the same, but schedules and cancels a timer each time:
    about 4 microseconds an item, a few hundred per run.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_task", "expired")

    def __init__(self, when: float) -> None:
        self.expired = False
        self._fired = False
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._handle: asyncio.Handle = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None and not self._fired:  # inside an await: interrupt it, once
            self._fired = True
            self._task.cancel()

    def cancel(self) -> None:
        """Stop the timer (the work it bounded is over)."""
        self._handle.cancel()

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        if self.expired:
            # Passed while the caller held the last item: interrupt this await at its first
            # pause, as `asyncio.timeout` would, so the work under way learns it was stopped.
            # (An await that did not pause, its item already at hand, left its call pending.)
            self._handle.cancel()
            self._handle = asyncio.get_running_loop().call_soon(self._expire)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> None:
        task, self._task = self._task, None
        if self._fired and task is not None:
            # As asyncio.timeout does: our cancel becomes a TimeoutError, anyone else's stays.
            self._fired = False
            if task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from None


class ChatClient:
    """A provider endpoint: streams chat completions and lists models."""

    provider: str = "base"
    # Whether the endpoint honours response_format={"type": "json_object"}.
    supports_json_mode: bool = True
    # Set once the endpoint has refused a json_schema request: from then on this client asks
    # for json_object instead, so the refusal costs one request, not one per call.
    json_schema_refused: bool = False
    # Whether the server enforces a schema's length limits (minLength...): only one known to
    # compile the whole schema into a grammar; strict mode elsewhere refuses those keywords.
    schema_lengths: bool = False
    # Whether idle connections are kept for the next call.
    keep_alive: bool = True
    # Set by each provider's constructor; the key lives here and nowhere else.
    _api_key: str
    _base_url: str | None
    # Where chat completions are posted, below the SDK's base URL, and the name of the httpx
    # module the SDK is built on (groq: httpx; openai: its fork httpx2).
    _chat_path = "/chat/completions"
    _http_name = "httpx"

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
        # How calls go out through the SDK client (`_wire.sdk`), built on first use or by
        # `warm()`.
        self._wire: _Wire | None = None
        self._in_flight = 0  # calls
        self._models: list[str] | None = None
        # Set once the endpoint has answered 404 for this model: later calls fail at once.
        self._model_missing = False
        # The model the endpoint reported answering, once a reply said.
        self.served_model: str | None = None
        self._slots: int | None = None
        self._slots_asked = False
        self._warming: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()  # the warming thread may open the first pool

    # -- what subclasses provide -------------------------------------------------------------

    def _make_sdk(self, connections: int) -> Any:
        raise NotImplementedError

    def _extra_params(self, stream: bool) -> dict[str, Any]:
        return {}

    def _build_sdk(self, sdk: Any, http_client: Any, http: Any, connections: int) -> Any:
        """An SDK client with its own retries off and a pool of `connections` connections.

        Both SDKs take the same arguments; only the HTTP library differs (`http` is the httpx
        module the SDK is built on: groq uses httpx, openai its fork httpx2).
        """
        client = http_client(
            limits=http.Limits(
                max_connections=connections,
                max_keepalive_connections=connections if self.keep_alive else 0,
            ),
            verify=_ssl_context(http),
        )
        # Requests go over our own HTTP/1.1 client (see wire.py) in place of the HTTP client's
        # default transport. Set after construction, because httpx reads the proxies named in
        # the environment (and NO_PROXY) only when it builds its own: those still go through
        # the transports it made for them, with the limits and TLS context above.
        client._transport = Transport(
            http,
            ssl_context=_ssl_context(http),
            limit=connections,
            keep_alive=connections if self.keep_alive else 0,
        )
        return sdk(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,
            timeout=http.Timeout(self.timeout, connect=connect_timeout(1, self.timeout)),
            http_client=client,
        )

    # -- the interface the modes use ---------------------------------------------------------

    @property
    def sdk(self) -> Any:
        """The underlying SDK client, created on first use."""
        return self._open().sdk

    @property
    def pools(self) -> int:
        """How many connection pools are built: one once the SDK client is, none before."""
        return 0 if self._wire is None else 1

    def _has_sdk(self) -> bool:
        # A client of one's own that streams without an SDK has nothing to build.
        return type(self)._make_sdk is not ChatClient._make_sdk

    def prepare(self) -> None:
        """Import the SDK and build its first client now, in this thread."""
        if self._has_sdk() and self._wire is None:
            self._open()

    def warm(self) -> None:
        """Start importing the SDK and building its first client in a background thread.

        The import costs a few hundred milliseconds once per process; started while the engine
        is built, it overlaps with whatever the caller does next instead of delaying it.
        """
        if self._has_sdk() and self._wire is None and self._warming is None:
            self._warming = concurrent.futures.Future()
            # Started on the event loop's next turn, when there is one: starting a thread hands
            # the CPU to it (it goes straight into the import), which on a busy machine cost the
            # constructor 10 to 40 ms. `_thread` does not wait for the thread to run, as
            # `threading.Thread.start` does.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                _thread.start_new_thread(self._warm, ())
            else:
                loop.call_soon(_thread.start_new_thread, self._warm, ())

    def _warm(self) -> None:
        assert self._warming is not None
        try:
            self.prepare()
            # The SDKs work out their platform headers on the first request (about 10 ms of
            # asking the OS); they cache the answer per process, so ask now.
            platform_headers = getattr(self.sdk, "platform_headers", None)
            if callable(platform_headers):
                platform_headers()
        except BaseException as error:  # the first call will build it again and say why
            self._warming.set_exception(error)
        else:
            self._warming.set_result(None)

    async def ready(self) -> None:
        """Wait for `warm()` to finish, so no call's seconds include the SDK's import."""
        warming = self._warming
        if warming is not None and not warming.done():
            # On failure the call that needs the SDK builds it again and raises the real error.
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(warming)

    def _open(self) -> _Wire:
        """The SDK client and its wire, built now if they are not yet (maybe in `warm()`'s
        thread, hence the lock)."""
        wire = self._wire
        if wire is None:
            with self._lock:
                if self._wire is None:
                    sdk = self._make_sdk(self.max_connections)
                    http = importlib.import_module(self._http_name)
                    self._wire = _Wire.of(sdk, http, self._chat_path)
                wire = self._wire
        return wire

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: JSONSchema | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Send `messages` and yield the reply as it arrives, retrying what is worth retrying.

        With `json_mode` the reply is asked to be a JSON object; with a `schema` too, one of
        that shape (where the endpoint takes a schema; otherwise any JSON object). `temperature`
        overrides the client's for this call (modes that sample several replies use it).
        """
        payload = [{"role": m.role, "content": m.content} for m in messages]
        await self.ready()
        estimate = sum(estimate_tokens(m.content) for m in messages) + min(
            max_tokens or self.max_tokens or 1024, 1024
        )
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # `timeout` bounds the whole call, retries and their waits included, from its first
        # send to its last token: a hung server and a slow drip both stop there.
        deadline: float | None = None
        bound: Deadline | None = None
        attempt = 1
        try:
            while True:
                slot = await self.limiter.acquire(estimate)
                await self._check_model_known()
                if deadline is None:
                    deadline = loop.time() + self.timeout
                    bound = Deadline(deadline)
                fmt = self._response_format(json_mode or schema is not None, schema)
                # Closed with the stream, so a consumer that stops reading (the loop guard) drops
                # the connection at once and the server stops writing.
                attempt_items = self._attempt(payload, fmt, schema, max_tokens, slot, temperature)
                try:
                    async with contextlib.aclosing(attempt_items):
                        while True:
                            try:
                                # Per item, so the time the consumer spends on one is not ours.
                                assert bound is not None
                                with bound:
                                    item = await anext(attempt_items)
                            except StopAsyncIteration:
                                break
                            except TimeoutError:
                                raise ProviderTimeoutError(self._timed_out()) from None
                            if isinstance(item, Completion):
                                item.seconds = time.perf_counter() - started
                                item.attempts = attempt
                                self.limiter.settle(slot, item.usage.total_tokens or estimate)
                            yield item
                    return
                except ModelNotFoundError as error:
                    raise await self._with_model_list(error) from None
                except SchemaRefusedError:
                    # Asked again at once without the schema; not a failed attempt of the call.
                    self.limiter.answered(slot)
                    self.json_schema_refused = True
                    continue
                except ProviderError as error:
                    if error.status_code is not None:
                        self.limiter.answered(slot)  # it reached the provider, which may count it
                    wait = self.retry.delay(error, attempt)
                    if wait is None:
                        if isinstance(error, RateLimitError) and (error.reset_in or 0) > max(
                            self.retry.max_wait, 0
                        ):
                            # Every call would be refused until then; batch callers (eval) stop.
                            self.limiter.block(error.reset_in or 0, error.limit)
                        raise
                    if loop.time() + wait >= deadline:  # no time left for another attempt
                        if isinstance(error, ProviderTimeoutError):
                            raise
                        raise ProviderTimeoutError(
                            f"{self._timed_out()} The last attempt failed: {error}",
                            status_code=error.status_code,
                        ) from None
                    if isinstance(error, RateLimitError) and error.reset_in is not None:
                        self.limiter.pause(wait)  # the provider's limit holds for every run
                    attempt += 1
                    # Said even when nothing streamed yet, so a consumer can show the wait live.
                    yield Restart(reason=str(error), wait=wait)
                    await asyncio.sleep(wait)
        finally:
            if bound is not None:
                bound.cancel()

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
        await self.ready()
        try:
            page = await self.sdk.models.list()
        except Exception as error:
            raise self._translate(error) from None
        self._models = sorted(m.id for m in page.data)
        return self._models

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self.ready()  # a pool still being built in the background is closed too
        wire, self._wire = self._wire, None
        if wire is not None:
            await wire.sdk.close()

    async def server_slots(self) -> int | None:
        """How many requests the server works on at once, where it says (llama.cpp's
        `/props` `total_slots`); None when it does not. Asked once per client."""
        if not self._slots_asked:
            self._slots_asked = True
            self._slots = await self._read_slots() if self.provider == "openai" else None
        return self._slots

    async def _read_slots(self) -> int | None:
        import httpx

        base = str(self._base_url or "").rstrip("/")
        if not base:
            return None  # OpenAI's own API has no /props
        # llama.cpp serves /props beside /v1, not under it.
        url = (base[: -len("/v1")] if base.endswith("/v1") else base) + "/props"
        try:
            async with httpx.AsyncClient(timeout=min(self.timeout, 5.0)) as http:
                response = await http.get(url, headers={"authorization": f"Bearer {self._api_key}"})
            slots = response.json().get("total_slots") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return (
            slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None
        )

    async def resolve_model(self) -> str | None:
        """The model that will really answer: the asked id when the endpoint lists it, the one
        model a single-model server lists (llama.cpp answers any id with it), else None."""
        if self.provider != "openai" or self._base_url is None:
            return None  # hosted APIs serve the id they are asked for, or refuse it
        try:
            listed = self._models if self._models is not None else await self.list_models()
        except (ProviderError, NotImplementedError):  # no listing: trust the asked id
            return None
        if self.model in listed:
            return self.model
        return listed[0] if len(listed) == 1 else None

    async def _note_served(self, reported: str | None) -> None:
        # A server that names another model than the one asked may be one that serves a
        # single model and ignores the id (llama.cpp): say so once, since runs saved under the
        # asked id would misname what ran.
        if not reported or self.served_model is not None:
            return
        self.served_model = reported
        if reported == self.model:
            return
        try:
            listed = self._models if self._models is not None else await self.list_models()
        except ProviderError:
            return
        if self.model not in listed:
            log.warning(
                "the endpoint does not list the model '%s' (it lists: %s) and answered as "
                "'%s'; runs record that as served_model.",
                self.model,
                ", ".join(listed) or "nothing",
                reported,
            )

    async def _check_model_known(self) -> None:
        # Only once the endpoint has refused the model: fail fast instead of asking again.
        # (A listing alone proves nothing: single-model servers answer ids they do not list.)
        if self._model_missing and self._models is not None and self.model not in self._models:
            raise ModelNotFoundError(self.model, self._models)

    async def _with_model_list(self, error: ModelNotFoundError) -> ModelNotFoundError:
        self._model_missing = True
        if error.available:
            return error
        try:
            available = await self.list_models()
        except ProviderError:
            available = []
        return ModelNotFoundError(
            self.model, available, retired=error.retired, status_code=error.status_code
        )

    # -- one attempt -------------------------------------------------------------------------

    def _response_format(self, json_mode: bool, schema: JSONSchema | None) -> ResponseFormat | None:
        """What this request asks for: the schema where it is taken, else any JSON object."""
        if not json_mode or not self.supports_json_mode:
            return None
        if schema is not None and not self.json_schema_refused:
            return "json_schema"
        return "json_object"

    def _params(
        self,
        payload: list[dict[str, str]],
        fmt: ResponseFormat | None,
        schema: JSONSchema | None,
        max_tokens: int | None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": payload}
        if temperature is None:
            temperature = self.temperature
        if temperature is not None:
            params["temperature"] = temperature
        budget = max_tokens or self.max_tokens
        if budget:
            params["max_completion_tokens"] = budget
        if self.reasoning_effort:
            params["reasoning_effort"] = self.reasoning_effort
        if fmt == "json_schema" and schema is not None:
            params["response_format"] = schema.response_format(
                lengths=self.schema_lengths, budget=budget
            )
        elif fmt is not None:
            params["response_format"] = {"type": "json_object"}
        return params

    async def _attempt(
        self,
        payload: list[dict[str, str]],
        fmt: ResponseFormat | None,
        schema: JSONSchema | None,
        max_tokens: int | None,
        slot: Slot,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamItem]:
        params = self._params(payload, fmt, schema, max_tokens, temperature)
        # JSON replies are validated whole by the provider (Groq streams neither JSON mode nor
        # structured outputs), so they are not streamed.
        stream = fmt is None
        if stream:
            params.update(self._extra_params(stream=True))
        wire = self._wire or self._open()
        self._in_flight += 1
        sent = time.perf_counter()
        try:
            response = await wire.send(
                params, stream, connect=connect_timeout(self._in_flight, self.timeout)
            )
            try:
                headers = dict(response.headers)
                self.limiter.observe(headers)
                self.limiter.answered(slot)
                if not stream:
                    reply = whole_reply(await response.aread())
                    await self._note_served(reply.model)
                    inline, text = split_thinking(reply.content or "")
                    thought = (reply.reasoning or "") + inline
                    if thought:
                        yield Thinking(thought)
                    if text:
                        yield Delta(text)
                    yield Completion(
                        text=text,
                        finish_reason=reply.finish_reason,
                        usage=_usage(reply.usage, text, payload),
                        seconds=0.0,
                        headers=headers,
                        response_format=fmt,
                        model=reply.model or None,
                        queued=_queued(sent, reply.timings),
                        thinking=thought,
                    )
                    return
                parts: list[str] = []
                thinking: list[str] = []
                finish_reason = None
                usage = None
                model = timings = None
                tags = ThinkTags()
                async for chunk in read_chunks(response.aiter_bytes()):
                    if chunk.usage:
                        usage = chunk.usage
                    if model is None and chunk.model:
                        model = chunk.model
                        # On the first chunk, so a warning comes before the reply's text.
                        await self._note_served(model)
                    if chunk.timings:
                        timings = chunk.timings
                    if chunk.finish_reason:
                        finish_reason = chunk.finish_reason
                    if chunk.reasoning:
                        thinking.append(chunk.reasoning)
                        yield Thinking(chunk.reasoning)
                    if chunk.content:
                        for is_thinking, piece in tags.feed(chunk.content):
                            (thinking if is_thinking else parts).append(piece)
                            yield Thinking(piece) if is_thinking else Delta(piece)
                for is_thinking, piece in tags.flush():
                    (thinking if is_thinking else parts).append(piece)
                    yield Thinking(piece) if is_thinking else Delta(piece)
            finally:
                await response.aclose()
            text = "".join(parts)
            if finish_reason is None:
                raise ProviderUnavailableError(
                    f"{self.provider}: the reply stream ended before it finished"
                )
            yield Completion(
                text=text,
                finish_reason=finish_reason,
                usage=_usage(usage, text, payload),
                seconds=0.0,
                headers=headers,
                model=model or None,
                queued=_queued(sent, timings),
                thinking="".join(thinking),
            )
        except ProviderError:
            raise
        except Exception as error:
            if fmt == "json_schema" and _refuses_schema(error):
                raise SchemaRefusedError(
                    f"{self.provider} does not take a JSON schema for {self.model}",
                    status_code=getattr(error, "status_code", None),
                ) from None
            translated = self._translate(error)
            if isinstance(translated, JSONValidationError):
                translated.response_format = fmt
            raise translated from None
        finally:
            self._in_flight -= 1

    # -- error handling ----------------------------------------------------------------------

    def _translate(self, error: Exception) -> ProviderError:
        """Turn an SDK exception into one of our typed errors with a readable line."""
        status = getattr(error, "status_code", None)
        name = type(error).__name__
        in_stream = isinstance(error, StreamErrorEvent)
        refused = _certificate_refusal(error)
        if refused is not None:  # not retried: a certificate that failed will fail again
            reason = str(refused.verify_message or refused.reason or "").rstrip(".")
            fix = (
                "it names another host, so check the host in the base URL."
                if refused.verify_code in _NAME_MISMATCH
                else "if the endpoint uses a private CA, set SSL_CERT_FILE to that CA's PEM file."
            )
            return ProviderError(
                f"Could not verify the TLS certificate of {self._where()}"
                + (f" ({reason})" if reason else "")
                + f"; {fix}"
            )
        if status is None and not in_stream:
            if name in ("InvalidURL", "UnsupportedProtocol"):  # not worth a retry
                return ProviderError(f"{self.provider}: the base URL is not usable: {error}")
            if name == "ConnectTimeout":
                return ProviderTimeoutError(f"Could not connect to {self._where()} in time.")
            if "Timeout" in name:
                return ProviderTimeoutError(self._timed_out())
            transport = type(error).__module__.startswith(("httpx", "httpcore", "h11"))
            if "Connection" in name or transport or isinstance(error, OSError):
                return ProviderUnavailableError(
                    f"Could not reach {self._where()}: the connection failed or was dropped."
                )
            return ProviderUnavailableError(f"{self.provider}: {name}: {error}")
        code, message = _error_details(error)
        headers = _headers_of(error)
        if status == 401:
            return AuthenticationError(
                f"{self.provider} rejected the API key (HTTP 401); check {self._key_name()}.",
                status_code=401,
            )
        if code in ("model_not_found", "model_decommissioned") or (
            status == 404 and "model" in message.lower()
        ):
            return ModelNotFoundError(
                self.model,
                self._models,
                retired=code == "model_decommissioned",
                status_code=status,
            )
        if code == "json_validate_failed":
            body = getattr(error, "body", None)
            failed = _find(body, "failed_generation")
            return JSONValidationError(message or "invalid JSON", failed)
        kind = str(_find(getattr(error, "body", None), "type") or "")
        if {code, kind} & _CONTEXT_CODES or any(
            words in message.lower() for words in _CONTEXT_WORDS
        ):
            said = f" ({self.provider} said: {_first_line(message)})" if message else ""
            return ContextTooLongError(
                f"The request is longer than the model's context window{said}; "
                "ask a shorter question or use fewer --turns.",
                status_code=status,
            )
        if code == "rate_limit_exceeded" and status is None:
            status = 429
        if status is None:  # an error event inside a stream: most often a passing server fault
            return ProviderUnavailableError(
                f"{self._where()} sent an error in the middle of its reply: "
                + _first_line(message or str(error))
            )
        if status in (413, 429):
            return _rate_limit_error(status, message, headers)
        if status in (408, 409) or status >= 500:
            return ProviderUnavailableError(
                f"{self._where()} failed with HTTP {status}"
                + (f": {_first_line(message)}" if message else "."),
                status_code=status,
            )
        if status == 404:
            return ProviderError(
                f"{self._where()} answered 404 Not Found; check the base URL.", status_code=404
            )
        return ProviderError(
            f"{self.provider} refused the request (HTTP {status}): {_first_line(message)}",
            status_code=status,
        )

    def _timed_out(self) -> str:
        return (
            f"{self.provider} did not answer within {self.timeout:g}s (--timeout, which bounds "
            "each call from its first send to its last token, retries included)."
        )

    def _where(self) -> str:
        url = str(getattr(self._wire.sdk, "base_url", "") or "") if self._wire else ""
        return f"the {self.provider} endpoint" + (f" at {url}" if url else "")

    def _key_name(self) -> str:
        return "GROQ_API_KEY" if self.provider == "groq" else "OPENAI_API_KEY"


class GroqClient(ChatClient):
    """Groq's hosted models through `groq.AsyncGroq`."""

    provider = "groq"
    _chat_path = "/openai/v1/chat/completions"

    def __init__(self, *, api_key: str | None, base_url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        key = api_key or os.environ.get("GROQ_API_KEY")
        if not key:
            raise MissingKeyError()
        self._api_key = checked_key(key, "the API key" if api_key else "GROQ_API_KEY")
        self._base_url = base_url or os.environ.get("GROQ_BASE_URL") or None
        remember(self._base_url)
        check_base_url(self._base_url, "the base URL" if base_url else "GROQ_BASE_URL")

    def _make_sdk(self, connections: int) -> Any:
        import groq
        import httpx

        return self._build_sdk(groq.AsyncGroq, groq.DefaultAsyncHttpxClient, httpx, connections)


class OpenAICompatibleClient(ChatClient):
    """Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp's server, LM Studio, OpenAI)."""

    provider = "openai"
    _http_name = "httpx2"

    def __init__(self, *, api_key: str | None, base_url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        source = "the API key" if api_key else "OPENAI_API_KEY"
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        remember(self._base_url)
        check_base_url(self._base_url, "the base URL" if base_url else "OPENAI_BASE_URL")
        # With no base URL the SDK goes to OpenAI's own API, where a keyless request can only
        # be refused; the user almost surely meant a local server and forgot --base-url.
        if self._base_url is None and not key:
            raise MissingKeyError("openai")
        # Local servers usually take no key, but the SDK insists on one: send a placeholder.
        self._api_key = checked_key(key, source) if key else "no-key"

    def _make_sdk(self, connections: int) -> Any:
        import httpx2
        import openai

        return self._build_sdk(
            openai.AsyncOpenAI, openai.DefaultAsyncHttpxClient, httpx2, connections
        )

    def _extra_params(self, stream: bool) -> dict[str, Any]:
        return {"stream_options": {"include_usage": True}} if stream else {}


def checked_key(key: str, source: str) -> str:
    """`key`, remembered for redaction; `InputError` at once if it cannot be sent as a header."""
    remember(key)
    stripped = key.strip()
    if not stripped:
        raise InputError(f"{source} is blank; set it to your key.")
    if stripped != key:
        where = "ends" if key.startswith(stripped) else "starts" if key.endswith(stripped) else ""
        what = "a newline" if "\n" in key.replace(stripped, "") else "whitespace"
        raise InputError(
            f"{source} {where or 'starts and ends'} with {what}; remove it (the provider would "
            "refuse the key, and no request was sent)."
        )
    bad = next((c for c in key if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise InputError(
            f"{source} contains {'a space' if bad == ' ' else f'the character U+{ord(bad):04X}'}, "
            "which no API key has; check that it was copied whole (no request was sent)."
        )
    return key


def make_client(provider: str, **kwargs: Any) -> ChatClient:
    """Build the chat client for `provider` ("groq", "openai" or "local")."""
    if provider == "groq":
        return GroqClient(**kwargs)
    if provider == "openai":
        return OpenAICompatibleClient(**kwargs)
    if provider == "local":
        # By name, not by an import statement: `local` builds on this module (its client is an
        # OpenAI-compatible one), and it imports nothing heavy until the server starts.
        local = importlib.import_module(f"{__package__}.local")
        return local.LocalClient(**kwargs)
    raise InputError(f"Unknown provider '{provider}'; choose one of: {', '.join(PROVIDERS)}.")


@dataclass(slots=True)
class _Wire:
    """How a call goes out through one SDK client, without the SDK's per-request machinery.

    The SDK builds one request for the chat-completions path when the pool opens: its URL,
    its auth and platform headers on top of its HTTP client's own, its timeouts. Every call
    then sends that request's URL and headers with its own body, and a refused call still
    raises the SDK's typed error. What is skipped is the work the SDK and its HTTP stack repeat
    for every request to arrive at the same answer: a pydantic options model, the typed-dict
    transform of the body, the headers and URL merged again, the HTTP client's cookie,
    redirect and auth steps, and a general-purpose HTTP/1.1 and connection-pool layer under
    them. Calls go straight into the pool of our own HTTP/1.1 client (wire.py), which is also
    the SDK's HTTP client's transport; a URL the environment sends through a proxy goes to the
    proxy transport that client built for it. (An SDK whose key could change between requests,
    a key provider, would be read once per pool: the engine gives it a fixed key.)
    """

    sdk: Any
    http: Any  # the httpx module the SDK is built on
    transport: Any
    url: Any
    headers: Any
    extensions: dict[str, Any]
    log: logging.Logger  # the HTTP library's own, where it notes every request at INFO
    pool: Pool | None  # our own HTTP/1.1 client, where the SDK's would send plainly
    head: bytes  # with `pool`: the request line and headers, all but the body's length

    @classmethod
    def of(cls, sdk: Any, http: Any, path: str) -> _Wire:
        """The wire of `sdk`, for requests to `path` below its base URL."""
        models = importlib.import_module(type(sdk).__module__.split(".")[0] + "._models")
        options = models.FinalRequestOptions.construct(method="post", url=path, json_data={})
        template = sdk._build_request(options)
        headers = http.Headers(template.headers)
        headers.pop("content-length", None)  # each call's own body sets its own
        if "x-stainless-async" in headers:  # worked out where the pool opened, maybe a thread
            headers["x-stainless-async"] = "async:asyncio"
        url = template.url
        if url.username or url.password:
            # As the HTTP client's own auth step does: credentials in the base URL (a gateway's
            # basic auth) are sent as basic auth, in place of the key's header.
            pair = f"{url.username}:{url.password}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        client = sdk._client  # the HTTP client we handed the SDK (see `_build_sdk`)
        transport = client._transport_for_url(url)
        pool = transport.pool_for(url) if isinstance(transport, Transport) else None
        head = b""
        if pool is not None:
            # Our client reads only what it asked for: replies uncompressed.
            lines = [b"POST " + url.raw_path + b" HTTP/1.1\r\n"]
            for name, value in headers.raw:
                if name.lower() == b"accept-encoding":
                    value = b"identity"
                lines.append(name + b": " + value + b"\r\n")
            head = b"".join(lines)
        return cls(
            sdk=sdk,
            http=http,
            transport=transport,
            url=url,
            headers=headers,
            extensions=dict(template.extensions),
            log=logging.getLogger(http.__name__),
            pool=pool,
            head=head,
        )

    async def send(self, body: dict[str, Any], stream: bool, connect: float) -> Any:
        """Post `body` as JSON and return the response, its body unread; a refused request
        raises the SDK's typed error for its status, as the SDK itself would. A new connection
        must be made within `connect` seconds."""
        content = orjson.dumps({**body, "stream": stream})
        if self.pool is None:
            return await self._send_by_transport(content, connect)
        response: Any = await self.pool.send(
            b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(content), content), connect
        )
        self._log(response)
        if response.is_redirect or response.status_code >= 400:
            try:
                received = await response.aread()
            finally:
                await response.aclose()
            request = self._request(content, connect)
            if response.is_redirect:
                # Rare (a proxy sending http to https, say): the SDK's HTTP client follows it.
                response = await self.sdk._client.send(request, stream=True)
                if response.status_code >= 400:
                    await self._refuse(response)
                return response
            raise self.sdk._make_status_error_from_response(
                self.http.Response(
                    response.status_code,
                    headers=response.raw_headers,
                    content=received,
                    request=request,
                )
            )
        return response

    async def _send_by_transport(self, content: bytes, connect: float) -> Any:
        request = self._request(content, connect)
        response = await self.transport.handle_async_request(request)
        response.request = request
        self._log(response)
        if response.is_redirect:
            await response.aclose()
            response = await self.sdk._client.send(request, stream=True)
        if response.status_code >= 400:
            await self._refuse(response)
        return response

    def _request(self, content: bytes, connect: float) -> Any:
        timeouts = self.extensions.get("timeout")
        extensions = self.extensions
        if isinstance(timeouts, dict) and timeouts.get("connect") != connect:
            extensions = {**extensions, "timeout": {**timeouts, "connect": connect}}
        return self.http.Request(
            "POST", self.url, headers=self.headers, content=content, extensions=extensions
        )

    async def _refuse(self, response: Any) -> None:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise self.sdk._make_status_error_from_response(response)

    def _log(self, response: Any) -> None:
        if self.log.isEnabledFor(logging.INFO):  # the line the HTTP client would have logged
            self.log.info(
                'HTTP Request: %s %s "%s %d %s"',
                "POST",
                self.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )


# -- helpers -----------------------------------------------------------------------------------

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


@functools.cache
def _ssl_context(http: Any) -> Any:
    """One verified TLS context per HTTP library, shared by every pool: building one reads the
    CA bundle (about 25 ms), which each SDK client would otherwise do for itself."""
    try:
        return http.create_ssl_context()
    except OSError as error:  # ssl.SSLError too: a CA file that is missing or not PEM
        variable = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        where = os.environ.get(variable, "")
        reason = error.strerror or str(error)
        raise InputError(
            f"Could not load CA certificates from {variable} ({where}): {reason}."
        ) from None


def _usage(reported: Mapping[str, Any] | None, text: str, payload: list[dict[str, str]]) -> Usage:
    if reported:
        prompt = reported.get("prompt_tokens") or 0
        completion = reported.get("completion_tokens") or 0
        total = reported.get("total_tokens") or prompt + completion
        details = reported.get("completion_tokens_details")
        reasoning = (details.get("reasoning_tokens") if isinstance(details, Mapping) else 0) or 0
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            reasoning_tokens=reasoning,
        )
    # Some local servers send no usage at all; an estimate beats a zero in a comparison.
    prompt = sum(estimate_tokens(m["content"]) for m in payload)
    completion = estimate_tokens(text)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _queued(sent: float, timings: Any) -> float | None:
    """Seconds a reply waited at the server: its wall time less the time the server says it
    worked on it (llama.cpp's `timings`); None when the server does not say."""
    if not isinstance(timings, Mapping):
        return None
    try:
        worked = (
            float(timings.get("prompt_ms") or 0) + float(timings.get("predicted_ms") or 0)
        ) / 1000
    except (TypeError, ValueError):
        return None
    return max(0.0, time.perf_counter() - sent - worked)


def _find(body: Any, key: str) -> Any:
    if isinstance(body, Mapping):
        if key in body:
            return body[key]
        inner = body.get("error")
        if isinstance(inner, Mapping):
            return inner.get(key)
    return None


def _refuses_schema(error: Exception) -> bool:
    """Whether an SDK error is the endpoint refusing `response_format` of type json_schema.

    Groq says "This model does not support response format `json_schema`", OpenAI names the
    parameter ("param": "response_format"), older llama.cpp servers say the type must be
    "text" or "json_object"; some servers answer 422 for a field they do not know.
    """
    if getattr(error, "status_code", None) not in (400, 422):
        return False
    code, message = _error_details(error)
    if code == "json_validate_failed":
        return False  # the schema was taken; the model's reply did not fit it
    param = _find(getattr(error, "body", None), "param")
    text = f"{param} {message}".lower().replace("_", " ")
    return "response format" in text or "json schema" in text


def _certificate_refusal(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The ssl error saying the server's certificate was not trusted, when `error` comes down
    to one: the SDKs wrap it twice (APIConnectionError from httpx's ConnectError, raised from
    httpcore's, whose context is the ssl error); a plain asyncio connection raises it as is."""
    import ssl  # only on an error: the CLI's start-up does not pay for it

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


# OpenSSL's verify codes for a certificate that names another host (X509_V_ERR_HOSTNAME_MISMATCH,
# _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH): trusting another CA would not help.
_NAME_MISMATCH = frozenset({62, 63, 64})


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
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:300]


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
