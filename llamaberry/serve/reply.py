"""`llamaberry serve`: every mode as a model behind an OpenAI-compatible chat-completions API.

Any OpenAI client (a chat app, an editor plugin, the `openai` SDK, curl) picks a mode by the
model name: `refine` runs the refine mode on the configured upstream model, and
`refine/openai/gpt-oss-20b` picks the upstream model too. The intermediate work (turns, steps,
drafts, the upstream model's own thinking) goes out as `reasoning_content`, the field chat apps
fold into a "thinking" section, and the final answer as `content`.

The server is a small Starlette app run by uvicorn (both already come with gradio). Every
request is a run on a shared engine, so all of them share one rate limiter, one connection pool
and the history, exactly as runs started from the CLI or the web UI do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

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
from llamaberry.core.events import (
    CallFinished,
    CallStarted,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.core.redact import redact
from llamaberry.core.results import CallResult, Run, call_title

if TYPE_CHECKING:
    from llamaberry.core.settings import Settings
    from llamaberry.engine import Engine
    from llamaberry.providers.limits import RateLimiter
    from llamaberry.store import Store

log = logging.getLogger("llamaberry.serve")

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


# -- what a mode's run looks like from a chat app --------------------------------------------


def mode_names() -> list[str]:
    """Every mode the engine can run, as model names (read from the registry)."""
    from llamaberry import modes

    return modes.names()


def mode_options(mode: str) -> frozenset[str]:
    """The request keys a mode takes as options (its options model's fields)."""
    from llamaberry import modes

    return frozenset(modes.get(mode).options.model_fields)


# A call of this kind writes the answer itself (single's reply, steps' closing call), so its
# text streams live as content; every other call is intermediate work.
ANSWER_KIND = "answer"


def final_text(run: Run) -> str:
    """What the chat app shows as the reply: the fullest form of the run's answer."""
    synthesis = run.synthesis
    if synthesis is not None and synthesis.comprehensive_answer:
        full = synthesis.comprehensive_answer.strip()
        concise = (synthesis.concise_answer or "").strip()
        return full if not concise or concise in full else f"{full}\n\n**In short:** {concise}"
    return run.answer or ""


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


# -- the engines -----------------------------------------------------------------------------


class Gateway:
    """The engines behind the endpoint: one per upstream model and sampling setting.

    Engines for the same upstream model share one rate limiter, so a burst of requests with
    different temperatures still paces as one client of that model.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        history: bool | Store | None = None,
        rate_period: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        # Mode options (`turns`...) every engine uses when a request does not give its own.
        self.options = dict(options or {})
        # The window the rpm/tpm limits are counted over (tests shorten it).
        self.rate_period = rate_period
        self._engines: dict[tuple[Any, ...], Engine] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._models: list[str] | None = None

    def engine(self, request: ChatRequest | None = None, upstream: str | None = None) -> Engine:
        """The engine for a request's upstream model and sampling settings (default: ours)."""
        from llamaberry.engine import Engine
        from llamaberry.providers.limits import RateLimiter

        base = self.settings
        wanted = {
            "model": upstream or base.model,
            "temperature": base.temperature,
            "max_tokens": base.max_tokens,
            "reasoning_effort": base.reasoning_effort,
        }
        if request is not None:
            asked = {
                "temperature": request.temperature,
                "max_tokens": request.max_completion_tokens or request.max_tokens,
                "reasoning_effort": request.reasoning_effort,
            }
            wanted |= {k: v for k, v in asked.items() if v is not None}
        key = tuple(wanted.values())
        if key not in self._engines:
            try:
                settings = base.model_validate(base.model_dump() | wanted)
            except ValidationError as error:
                first = error.errors()[0]
                raise InputError(f"Invalid {first['loc'][0]}: {first['msg']}.") from None
            limiter = self._limiters.setdefault(
                settings.model,
                RateLimiter(rpm=settings.rpm, tpm=settings.tpm, period=self.rate_period),
            )
            self._engines[key] = Engine(
                settings=settings, limiter=limiter, history=self.history, **self.options
            )
        return self._engines[key]

    async def upstream_models(self) -> list[str]:
        """The upstream endpoint's models (empty when it will not say), asked once."""
        if self._models is None:
            from llamaberry.engine import Engine

            engine = next(iter(self._engines.values()), None)
            try:
                if engine is None:
                    async with Engine(settings=self.settings, history=False) as probe:
                        self._models = await probe.models()
                else:
                    self._models = await engine.models()
            except LlamaberryError as error:
                log.warning("llamaberry serve: upstream models not listed: %s", error)
                return []
        return self._models

    async def aclose(self) -> None:
        """Close every engine."""
        for engine in self._engines.values():
            await engine.aclose()
        self._engines.clear()


# -- the HTTP side -----------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    api_key: str | None = None,
    history: bool | Store | None = None,
    reasoning_field: ReasoningField = "reasoning_content",
    gateway: Gateway | None = None,
    options: dict[str, Any] | None = None,
) -> Starlette:
    """The ASGI app: /v1/chat/completions, /v1/models and /health."""
    gateway = gateway or Gateway(settings, history=history, options=options)
    modes = mode_names()

    def error_response(error: ServeError) -> Response:
        headers = {}
        if error.retry_after is not None:
            headers["retry-after"] = str(max(1, round(error.retry_after)))
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if api_key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    return error_response(
                        ServeError(
                            401,
                            "Missing or wrong API key: send Authorization: Bearer <key>.",
                            kind="authentication_error",
                            code="invalid_api_key",
                        )
                    )
            try:
                return await handler(request)
            except ServeError as error:
                return error_response(error)
            except LlamaberryError as error:
                return error_response(error_for(error))

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> Response:
        names = list(modes)
        for upstream in await gateway.upstream_models():
            names += [f"{mode}/{upstream}" for mode in modes]
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "llamaberry"}
            for name in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise ServeError(400, "The request body is not valid JSON.") from None
        try:
            chat_request = ChatRequest.model_validate(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ServeError(400, f"Invalid request: {where}: {first['msg']}.") from None
        if chat_request.n not in (None, 1):
            raise ServeError(400, "n must be 1: each request is one run.")
        mode, upstream = parse_model(chat_request.model, modes)
        options = chat_request.options()
        unknown = sorted(set(options) - mode_options(mode))
        if unknown:
            raise ServeError(
                400,
                f"The {mode} mode has no option {', '.join(unknown)}"
                + (
                    f"; it takes {', '.join(sorted(mode_options(mode)))}."
                    if mode_options(mode)
                    else "."
                ),
                code="unknown_option",
            )
        question = conversation_question(chat_request.messages)
        engine = gateway.engine(chat_request, upstream)
        events = engine.stream(mode, question, **options)  # type: ignore[arg-type]  # bad input raises here, before a call
        reply = Reply(chat_request.model, mode, reasoning_field)
        if chat_request.stream:
            usage = bool((chat_request.stream_options or {}).get("include_usage"))
            return SSEResponse(reply.chunks(events, include_usage=usage))
        run = await until_disconnected(request, reply.collect(events))
        if run.status != "ok":
            raise failed_run_error(run)
        return JSONResponse(reply.completion(run))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", guarded(models)),
            Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


async def until_disconnected(request: Request, work: Awaitable[Run]) -> Run:
    """Await `work`, cancelling it the moment the client goes away."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ServeError(499, "the client closed the connection", kind="cancelled")
    return task.result()


class SSEResponse(StreamingResponse):
    """A server-sent-events stream; Starlette cancels it when the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, headers={"cache-control": "no-cache"})


def _retrying(event: TextReset) -> str:
    return f"\n\n*(retrying: {event.reason})*\n\n"


@dataclass
class _Held:
    """What a call that runs beside the streaming one has sent so far, to go out whole."""

    retried: str = ""
    thinking: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def add(self, event: TextDelta | ThinkingDelta | TextReset) -> None:
        """Keep a piece of thinking or text; a retry throws away what came before it."""
        if isinstance(event, TextReset):
            self.thinking.clear()
            self.text.clear()
            self.retried = _retrying(event).lstrip()
        else:
            (self.thinking if isinstance(event, ThinkingDelta) else self.text).append(event.text)

    def block(self) -> str:
        """The call's thinking, a blank line, then its reply."""
        thinking, text = "".join(self.thinking), "".join(self.text)
        return self.retried + (f"{thinking}\n\n{text}" if thinking else text)


class Reply:
    """Turns one run's events into chat-completion chunks, or into one completion."""

    def __init__(self, model: str, mode: str, reasoning_field: ReasoningField) -> None:
        self.model = model
        self.mode = mode
        self.fields = (
            ["reasoning_content", "reasoning"] if reasoning_field == "both" else [reasoning_field]
        )
        self.created = int(time.time())
        self.id = "chatcmpl-"
        self.answer_kind = ANSWER_KIND
        self.reasoning: list[str] = []
        self.content: list[str] = []
        # Calls that started while another streamed (a vote's samples, drafts): their thinking
        # and text are held and sent as one block under the call's heading when it finishes,
        # so concurrent calls never interleave, not even in the upstream model's thinking.
        self._streaming: tuple[str, int] | None = None
        self._held: dict[tuple[str, int], _Held] = {}
        # The call whose thinking was the last thing sent: its reply starts after a blank line.
        self._thinking: tuple[str, int] | None = None

    def _route(self, event: object) -> tuple[str, str] | None:
        """Which part of the reply an event adds to, and the text it adds."""
        if isinstance(event, CallStarted):
            if event.kind == self.answer_kind:
                return None
            if self._streaming is not None:
                self._held[(event.kind, event.index)] = _Held()
                return None
            self._streaming = (event.kind, event.index)
            return "reasoning", self._heading(event.kind, event.index)
        if isinstance(event, CallFinished):
            call = (event.kind, event.index)
            if call == self._streaming:
                self._streaming = None
            held = self._held.pop(call, None)
            after = self._after(event.result)
            if held is None:
                return ("reasoning", after) if after else None
            return "reasoning", self._heading(event.kind, event.index) + held.block() + after
        if isinstance(event, TextDelta | ThinkingDelta | TextReset):
            held = self._held.get((event.kind, event.index))
            if held is not None:
                held.add(event)
                return None
        if isinstance(event, ThinkingDelta):
            call = (event.kind, event.index)
            # The answer's thinking has no heading of its own: keep it off the last call's text.
            gap = "\n\n" if call != self._thinking and event.kind == self.answer_kind else ""
            self._thinking = call
            return "reasoning", (gap if self.reasoning else "") + event.text
        if isinstance(event, TextDelta):
            after_thinking = self._thinking == (event.kind, event.index)
            self._thinking = None
            if event.kind == self.answer_kind:
                return "content", event.text
            return "reasoning", ("\n\n" if after_thinking else "") + event.text
        if isinstance(event, TextReset):
            self._thinking = None
            if event.kind == self.answer_kind and not self.content:
                return None
            return "reasoning", _retrying(event)
        text = getattr(event, "text", None)  # an event of a newer kind that carries text
        if isinstance(text, str) and text:
            return "reasoning", text
        return None

    @staticmethod
    def _after(result: CallResult) -> str:
        """What a result adds after its text (a reflection and a reward), as
        reasoning, or ''."""
        remark, badge = result.remark(), result.badge()
        if not (remark or badge):
            return ""
        quoted = "\n".join(f"> {line}" for line in remark.splitlines()) if remark else ""
        return "\n\n" + "\n\n".join(
            part for part in (quoted, f"*{badge}*" if badge else "") if part
        )

    def _heading(self, kind: str, index: int) -> str:
        return ("\n\n" if self.reasoning else "") + f"### {call_title(kind, index)}\n\n"

    async def _events(self, events: AsyncIterator[Any]) -> AsyncIterator[tuple[str, str] | Run]:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, RunStarted):  # the run's id names every chunk
                    self.id = f"chatcmpl-{event.run_id}"
                    yield "start", ""
                    continue
                if isinstance(event, RunFinished):
                    yield event.run
                    continue
                routed = self._route(event)
                if routed is not None:
                    (self.content if routed[0] == "content" else self.reasoning).append(routed[1])
                    yield routed

    async def collect(self, events: AsyncIterator[Any]) -> Run:
        """Consume the whole run (for a non-streaming request)."""
        run: Run | None = None
        async for item in self._events(events):
            if isinstance(item, Run):
                run = item
        if run is None:
            raise ServeError(500, "the run ended without a result", kind="server_error")
        return run

    def usage(self, run: Run) -> dict[str, Any]:
        """The run's usage summed over every upstream call, the intermediate part as reasoning."""
        answer_tokens = sum(
            c.usage.completion_tokens for c in run.calls if c.kind == self.answer_kind
        )
        return {
            "prompt_tokens": run.usage.prompt_tokens,
            "completion_tokens": run.usage.completion_tokens,
            "total_tokens": run.usage.total_tokens,
            "completion_tokens_details": {
                "reasoning_tokens": run.usage.completion_tokens - answer_tokens
            },
        }

    def answer(self, run: Run) -> str:
        """The reply's content: what streamed as the answer, else the run's final text."""
        return "".join(self.content) or final_text(run)

    def completion(self, run: Run) -> dict[str, Any]:
        """One non-streaming chat completion for a finished run."""
        message: dict[str, Any] = {"role": "assistant", "content": self.answer(run)}
        for name in self.fields:
            message[name] = "".join(self.reasoning)
        return {
            "id": f"chatcmpl-{run.id}",
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": self.usage(run),
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            if delta or finish
            else [],
            **extra,
        }
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    async def chunks(
        self, events: AsyncIterator[Any], *, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """The run as server-sent chat-completion chunks, ending with `[DONE]`."""
        run: Run | None = None
        try:
            async for item in self._events(events):
                if isinstance(item, Run):
                    run = item
                    break
                part, text = item
                if part == "start":
                    yield self._chunk({"role": "assistant", "content": ""})
                elif part == "content":
                    yield self._chunk({"content": text})
                else:
                    yield self._chunk({name: text for name in self.fields})
        except LlamaberryError as error:  # the runner settles most failures; this is the rest
            yield b"data: " + json.dumps(error_for(error).body()).encode() + b"\n\n"
            return
        if run is None or run.status != "ok":
            failure = failed_run_error(run) if run is not None else ServeError(500, "no result")
            yield b"data: " + json.dumps(failure.body(), ensure_ascii=False).encode() + b"\n\n"
            return
        if not self.content:
            yield self._chunk({"content": final_text(run)})
        yield self._chunk({}, "stop")
        if include_usage:
            yield self._chunk({}, usage=self.usage(run))
        yield b"data: [DONE]\n\n"


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    api_key: str | None,
    reasoning_field: ReasoningField = "reasoning_content",
    on_ready: Callable[[str], None] | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Run the endpoint until interrupted; `options` are the modes' default options."""
    import uvicorn

    app = create_app(settings, api_key=api_key, reasoning_field=reasoning_field, options=options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/v1")
    server.run()
