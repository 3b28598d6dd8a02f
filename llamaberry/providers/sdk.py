"""A provider reached through its official SDK (Groq's, OpenAI's): one call from its first send
to its last token, with the rate limiter, the retry policy, the call's deadline and the
fallback from a JSON schema the endpoint refuses to any JSON object.

Each provider (groq.py, openai.py, local.py) only says which SDK it builds and which row of the
provider table (core/providers.py) it is: where its key and base URL come from, what it can do.
The SDKs are imported lazily, so the CLI starts fast.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from llamaberry.core.errors import (
    JSONValidationError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from llamaberry.core.json_reply import JSONSchema, ResponseFormat
from llamaberry.core.providers import Provider
from llamaberry.core.results import Message
from llamaberry.providers.base import ChatClient, Completion, Delta, Restart, StreamItem, Thinking
from llamaberry.providers.deadline import Deadline
from llamaberry.providers.discovery import (
    DISCOVERY_TIMEOUT,
    server_root,
    slots_from_server,
    window_from_server,
    window_in_model_list,
)
from llamaberry.providers.errors import (
    Endpoint,
    Failures,
    SchemaRefusedError,
    failures_of,
    refuses_schema,
    timed_out,
    translate,
)
from llamaberry.providers.keys import endpoint_of
from llamaberry.providers.limits import Slot
from llamaberry.providers.streams import (
    MAX_EVENT_BYTES,
    ThinkTags,
    ToolCalls,
    queued_since,
    read_chunks,
    split_thinking,
    usage_of,
    whole_reply,
)
from llamaberry.providers.tokens import estimate_prompt
from llamaberry.providers.transport import build_sdk, connect_timeout

log = logging.getLogger("llamaberry")


class SDKClient(ChatClient):
    """A provider endpoint reached through its SDK: streams chat completions and lists models."""

    # Set once the endpoint has refused a json_schema request: from then on this client asks
    # for json_object instead, so the refusal costs one request, not one per call.
    json_schema_refused: bool = False
    # The provider's row in the table (core/providers.py): where its key and base URL come
    # from and what it can do. Each provider's class sets it; `provider` is its name.
    row: ClassVar[Provider]
    # Whether the server enforces a schema's length limits (the row's `schema_lengths`).
    schema_lengths: bool
    # The SDK's package, and the httpx module it is built on (groq: httpx; openai: its fork
    # httpx2): their public exception types are what a failed call raises (see errors.py).
    _sdk_name = "groq"
    _http_name = "httpx"
    # Where the SDK's base URL takes chat completions (what its own `create` posts to).
    chat_path: ClassVar[str] = "/chat/completions"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.provider = cls.row.name

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        # The key lives here and nowhere else; both as given, else from the row's variables.
        self._api_key, self._base_url = endpoint_of(self.row, api_key, base_url)
        self.schema_lengths = self.row.schema_lengths
        # The SDK client, built on first use or by `warm()`, and the httpx module under it.
        self._client: Any = None
        self._http: Any = None
        # The event loop the SDK client's connections belong to, once a call has used it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0  # calls
        self._models: list[str] | None = None
        # Set once the endpoint has answered 404 for this model: later calls fail at once.
        self._model_missing = False
        self._slots: int | None = None
        self._slots_asked = False
        self._warming: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()  # the warming thread may open the first pool

    # -- what each provider provides ---------------------------------------------------------

    def _make_sdk(self, connections: int) -> Any:
        raise NotImplementedError

    def _extra_params(self, stream: bool) -> dict[str, Any]:
        return {}

    def _build_sdk(self, sdk: Any, http_client: Any, http: Any, connections: int) -> Any:
        """An SDK client for this endpoint (see `transport.build_sdk`)."""
        return build_sdk(
            sdk,
            http_client,
            http,
            api_key=self._api_key,
            base_url=self._base_url,
            timeout=self.timeout,
            connections=connections,
            keep_alive=self.row.keep_alive,
        )

    # -- the SDK client, built once --------------------------------------------------------

    @property
    def sdk(self) -> Any:
        """The underlying SDK client, created on first use."""
        return self._open()

    @property
    def pools(self) -> int:
        """How many connection pools are built: one once the SDK client is, none before."""
        return 0 if self._client is None else 1

    def prepare(self) -> None:
        """Import the SDK and build its first client now, in this thread."""
        if self._client is None:
            self._open()

    def warm(self) -> None:
        """Start importing the SDK and building its first client in a background thread.

        The import costs a few hundred milliseconds once per process; started while the engine
        is built, it overlaps with whatever the caller does next instead of delaying it.
        """
        if self._client is None and self._warming is None:
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

    def _open(self) -> Any:
        """The SDK client, built now if it is not yet (maybe in `warm()`'s thread, hence the
        lock)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._http = importlib.import_module(self._http_name)
                    self._client = self._make_sdk(self.max_connections)
                client = self._client
        return client

    def _for_this_loop(self) -> Any:
        """The SDK client, for a call on the running event loop. Connections belong to the
        loop that opened them: a client used from a new loop (a second `asyncio.run`) starts
        afresh, and the old loop's connections die with it."""
        client = self._client or self._open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                with self._lock:
                    self._client = None
                client = self._open()
            self._loop = loop
        return client

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.ready()  # a pool still being built in the background is closed too
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is not None and (loop is None or loop is asyncio.get_running_loop()):
            await client.close()

    # -- one call, retried -------------------------------------------------------------------

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: JSONSchema | None = None,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Send `messages` and yield the reply as it arrives, retrying what is worth retrying.

        With `json_mode` the reply is asked to be a JSON object; with a `schema` too, one of
        that shape (where the endpoint takes a schema; otherwise any JSON object). `temperature`
        overrides the client's for this call (modes that sample several replies use it).
        `extra` fields go into the request as given (a client's own `response_format` is sent
        as it wrote it, and its reply, like ours, comes whole).
        """
        payload: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in messages]
        extra = dict(extra or {})
        await self.ready()
        prompt = estimate_prompt(messages)
        estimate = prompt + min(max_tokens or self.max_tokens or 1024, 1024)
        started = time.perf_counter()
        # `timeout` bounds the whole call, retries and their waits included, from its first
        # send to its last token: a hung server and a slow drip both stop there.
        deadline = 0.0
        bound: Deadline | None = None
        attempt = 1
        try:
            while True:
                slot = await self.limiter.acquire(estimate, max_wait=self.timeout)
                await self._check_model_known()
                if bound is None:
                    deadline = asyncio.get_running_loop().time() + self.timeout
                    bound = Deadline(deadline)
                fmt = self._response_format(json_mode or schema is not None, schema)
                # Closed with the stream, so a consumer that stops reading (the loop guard) drops
                # the connection at once and the server stops writing.
                items = self._attempt(
                    payload, prompt, fmt, schema, max_tokens, slot, temperature, extra
                )
                try:
                    async with contextlib.aclosing(items):
                        while True:
                            try:
                                # Per item, so the time the consumer spends on one is not ours.
                                with bound:
                                    item = await anext(items)
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
                    wait = self._retry_wait(error, attempt, slot, deadline)
                    attempt += 1
                    # Said even when nothing streamed yet, so a consumer can show the wait live.
                    yield Restart(reason=str(error), wait=wait)
                    await asyncio.sleep(wait)
        finally:
            if bound is not None:
                bound.cancel()

    def request(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: JSONSchema | None = None,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The body of the chat request `stream` would send for the same arguments, un-streamed:
        what one line of a Batch API file carries (same model, messages, sampling and format)."""
        payload: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in messages]
        fmt = self._response_format(json_mode or schema is not None, schema)
        params = self._params(payload, fmt, schema, max_tokens, temperature, extra)
        for streamed_only in self._extra_params(stream=True):
            params.pop(streamed_only, None)
        return params

    def _retry_wait(self, error: ProviderError, attempt: int, slot: Slot, deadline: float) -> float:
        """Seconds to wait before trying the call again after `error`; raises the error (or a
        timeout, when the wait would pass the call's `deadline`) when it is not retried."""
        if error.status_code is not None:
            self.limiter.answered(slot)  # it reached the provider, which may count it
        wait = self.retry.delay(error, attempt)
        if wait is None:
            if isinstance(error, RateLimitError) and (error.reset_in or 0) > max(
                self.retry.max_wait, 0
            ):
                # Every call would be refused until then; batch callers (eval) stop.
                self.limiter.block(error.reset_in or 0, error.limit)
            raise error
        if asyncio.get_running_loop().time() + wait >= deadline:  # no time left for another
            if isinstance(error, ProviderTimeoutError):
                raise error
            raise ProviderTimeoutError(
                f"{self._timed_out()} The last attempt failed: {error}",
                status_code=error.status_code,
            ) from None
        if isinstance(error, RateLimitError) and error.reset_in is not None:
            self.limiter.pause(wait)  # the provider's limit holds for every run
        return wait

    # -- one attempt -------------------------------------------------------------------------

    def _response_format(self, json_mode: bool, schema: JSONSchema | None) -> ResponseFormat | None:
        """What this request asks for: the schema where it is taken, else any JSON object."""
        if not json_mode:
            return None
        if schema is not None and not self.json_schema_refused:
            return "json_schema"
        return "json_object"

    def _params(
        self,
        payload: list[dict[str, Any]],
        fmt: ResponseFormat | None,
        schema: JSONSchema | None,
        max_tokens: int | None,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
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
        # JSON replies are validated whole by the provider (Groq streams neither JSON mode nor
        # structured outputs), so they are not streamed.
        if fmt is None and not (extra and extra.get("response_format")):
            params.update(self._extra_params(stream=True))
        if extra:
            params.update(extra)
        return params

    async def _attempt(
        self,
        payload: list[dict[str, str]],
        prompt: int,
        fmt: ResponseFormat | None,
        schema: JSONSchema | None,
        max_tokens: int | None,
        slot: Slot,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamItem]:
        params = self._params(payload, fmt, schema, max_tokens, temperature, extra)
        # A client's own response_format comes back whole too (Groq streams no JSON reply).
        asked = _format_of(extra)
        whole = fmt is not None or asked is not None
        sdk = self._for_this_loop()
        connect = connect_timeout(self._in_flight + 1, self.timeout)
        self._in_flight += 1
        sent = time.perf_counter()
        params["stream"] = not whole
        response = None
        try:
            # The SDK's public `post` builds and sends the request (its headers, key and base
            # URL) and raises its typed error for a refusal. The body goes as we built it:
            # `chat.completions.create` would walk every message through the SDK's typed-dict
            # transform first, a third of a call's CPU, to send the same bytes. With
            # `cast_to=Response` and `stream=True` the reply comes back unread, and its bytes
            # are ours to parse (see streams.py).
            response = await sdk.post(
                self.chat_path,
                cast_to=self._http.Response,
                body=params,
                options={"timeout": self._http.Timeout(self.timeout, connect=connect)},
                stream=True,
            )
            self.limiter.observe(response.headers)
            self.limiter.answered(slot)
            if whole:
                for item in await self._read_whole(response, prompt, fmt or asked, sent):
                    yield item
                return
            async with contextlib.aclosing(self._read_stream(response, prompt, sent)) as items:
                async for item in items:
                    yield item
        except ProviderError:
            raise
        except Exception as error:
            raise self._failed(error, fmt) from None
        finally:
            self._in_flight -= 1
            if response is not None:
                await response.aclose()

    async def _read_stream(
        self, response: Any, prompt: int, sent: float
    ) -> AsyncGenerator[StreamItem]:
        """The items of a streamed reply as its events arrive: thinking, text, and its end."""
        parts: list[str] = []
        thinking: list[str] = []
        finish_reason = usage = model = timings = None
        tools = ToolCalls()
        logprobs: list[Any] | None = None
        tags = ThinkTags()
        async for chunk in read_chunks(response.aiter_bytes(), max_event=MAX_EVENT_BYTES):
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
            if chunk.tool_calls:
                tools.feed(chunk.tool_calls)
            if chunk.logprobs is not None:
                logprobs = (logprobs or []) + chunk.logprobs
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
        if finish_reason is None:
            raise ProviderUnavailableError(
                f"{self.provider}: the reply stream ended before it finished"
            )
        text = "".join(parts)
        yield Completion(
            text=text,
            finish_reason=finish_reason,
            usage=usage_of(usage, text, prompt, timings),
            seconds=0.0,
            model=model or None,
            queued=queued_since(sent, timings),
            thinking="".join(thinking),
            tool_calls=tools.done(),
            logprobs=logprobs,
        )

    async def _read_whole(
        self, response: Any, prompt: int, fmt: ResponseFormat | None, sent: float
    ) -> list[StreamItem]:
        """The items of a reply that came whole (a JSON one): its thinking, text and end."""
        reply = whole_reply(await response.aread())
        await self._note_served(reply.model)
        inline, text = split_thinking(reply.content or "")
        thought = (reply.reasoning or "") + inline
        items: list[StreamItem] = [Thinking(thought)] if thought else []
        if text:
            items.append(Delta(text))
        completion = Completion(
            text=text,
            finish_reason=reply.finish_reason,
            usage=usage_of(reply.usage, text, prompt, reply.timings),
            seconds=0.0,
            response_format=fmt,
            model=reply.model or None,
            queued=queued_since(sent, reply.timings),
            thinking=thought,
            logprobs=reply.logprobs,
        )
        if reply.tool_calls:
            tools = ToolCalls()
            tools.feed(reply.tool_calls)
            completion.tool_calls = tools.done()
        return [*items, completion]

    def _failed(self, error: Exception, fmt: ResponseFormat | None) -> ProviderError:
        """Our error for an attempt that raised `error` (an SDK's, or its HTTP library's)."""
        if fmt == "json_schema" and refuses_schema(error, self._failures()):
            return SchemaRefusedError(
                f"{self.provider} does not take a JSON schema for {self.model}",
                status_code=getattr(error, "status_code", None),
            )
        translated = self._translate(error)
        if isinstance(translated, JSONValidationError):
            translated.response_format = fmt
        return translated

    # -- errors ------------------------------------------------------------------------------

    def _translate(self, error: Exception) -> ProviderError:
        """Turn an SDK exception into one of our typed errors with a readable line."""
        url = str(getattr(self._client, "base_url", "") or "") if self._client else ""
        variable = self.row.key_variable or ""
        where = Endpoint(self.provider, self.model, url, self.timeout, variable, self._models)
        return translate(error, where, self._failures())

    def _failures(self) -> Failures:
        """The exception types this client's SDK and its HTTP library raise, and their meaning."""
        sdk = importlib.import_module(self._sdk_name)
        return failures_of(sdk, importlib.import_module(self._http_name))

    def _timed_out(self) -> str:
        return timed_out(self.provider, self.timeout)

    # -- what the endpoint says about itself -------------------------------------------------

    async def list_models(self) -> list[str]:
        """The ids of the models this endpoint serves, sorted."""
        await self.ready()
        try:
            page = await self.sdk.models.list()
        except Exception as error:
            raise self._translate(error) from None
        self._models = sorted(m.id for m in page.data)
        return self._models

    async def resolve_model(self) -> str | None:
        """The model that will really answer: the asked id when the endpoint lists it, the one
        model a single-model server lists (llama.cpp answers any id with it), else None."""
        if not self.row.describes_itself or self._base_url is None:
            return None  # hosted APIs serve the id they are asked for, or refuse it
        try:
            listed = self._models if self._models is not None else await self.list_models()
        except (ProviderError, NotImplementedError):  # no listing: trust the asked id
            return None
        if self.model in listed:
            return self.model
        return listed[0] if len(listed) == 1 else None

    async def context_window(self) -> int | None:
        """The model's context window from the model list, else from the server's own
        endpoints (`/props`, `/api/show`); None when nothing says (never an error)."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel (Ctrl-C) that
            # lands in the same loop turn as the answer, and the run would go on.
            timeout = min(self.timeout, DISCOVERY_TIMEOUT)
            async with asyncio.timeout(timeout):
                window = window_in_model_list(await self.sdk.models.list(), self.model)
            root = self._server_root()
            if window is None and root is not None:
                # Each of its questions is bounded in time and size there.
                headers = self._server_headers()
                window = await window_from_server(root, self.model, headers, timeout)
        except Exception as error:  # the window is a nicety: never fail a run for want of it
            log.debug("llamaberry: could not learn the context window: %s", error)
            return None
        if window:
            log.debug("llamaberry: %s has a %d-token context window", self.model, window)
        return window

    async def server_slots(self) -> int | None:
        """How many requests the server works on at once, where it says (llama.cpp's
        `/props` `total_slots`); None when it does not. Asked once per client."""
        if not self._slots_asked:
            self._slots_asked = True
            root = self._server_root()
            if root is not None:
                timeout = min(self.timeout, 5.0)
                self._slots = await slots_from_server(root, self._server_headers(), timeout)
        return self._slots

    def _server_root(self) -> str | None:
        """Where the server's own endpoints are: beside the base URL's API, on the same
        server, so they are asked with the same key (llama.cpp's `--api-key` guards `/props`
        too). None for a provider's hosted API."""
        return server_root(self._base_url) if self.row.describes_itself else None

    def _server_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"}

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


def _format_of(extra: Mapping[str, Any] | None) -> ResponseFormat | None:
    """The JSON a client's own `response_format` asks for ("json_schema", "json_object"), if any."""
    asked = (extra or {}).get("response_format")
    kind = asked.get("type") if isinstance(asked, Mapping) else None
    return kind if kind in ("json_schema", "json_object") else None  # type: ignore[return-value]
