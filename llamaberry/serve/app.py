"""The HTTP side: the Starlette app's routes (/v1/chat/completions, /v1/responses, /v1/models,
/health), the API-key guard, and `serve`, which runs it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llamaberry.core.errors import LlamaberryError
from llamaberry.run.merge import merge
from llamaberry.serve.gateway import Gateway, check_options, mode_names
from llamaberry.serve.guard import MAX_BODY, Guard, is_loopback_name
from llamaberry.serve.reply import Reply, SSEResponse, Stopping, error_event, until_disconnected
from llamaberry.serve.responses import Responses, ResponsesRequest
from llamaberry.serve.schema import (
    DEFAULT_REASONING_FORMAT,
    ChatRequest,
    ReasoningField,
    ServeError,
    conversation_question,
    error_for,
    failed_run_error,
    parse_model,
)

if TYPE_CHECKING:
    from llamaberry.core.settings import Settings
    from llamaberry.store import Store

Body = TypeVar("Body", bound=BaseModel)


def create_app(
    settings: Settings,
    *,
    api_key: str | None = None,
    history: bool | Store | None = None,
    reasoning_field: ReasoningField = DEFAULT_REASONING_FORMAT,
    gateway: Gateway | None = None,
    options: dict[str, Any] | None = None,
    cors_origins: Sequence[str] = (),
    loopback: bool = True,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The ASGI app: /v1/chat/completions, /v1/responses, /v1/models and /health.

    Every route is behind `Guard`: browsers' requests come only from `cors_origins`, the Host
    must name this machine when `loopback` (the server listens on it only), a body is JSON of
    at most `max_body` bytes, and every reply is redacted.
    """
    gateway = gateway or Gateway(settings, history=history, options=options)
    # Set on SIGINT/SIGTERM (by `serve`): the streams and runs in flight end at once.
    stopping = Stopping()
    routes = _Routes(gateway, mode_names(), reasoning_field)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stopping.bind()
        yield
        await gateway.aclose()

    app = Starlette(
        routes=[
            Route("/health", routes.health),
            Route("/v1/models", _guarded(routes.models, api_key)),
            Route("/v1/chat/completions", _guarded(routes.chat, api_key), methods=["POST"]),
            Route("/v1/responses", _guarded(routes.responses, api_key), methods=["POST"]),
            Route(
                "/v1/responses/{response_id}",
                _guarded(routes.responses_api.retrieve, api_key),
                methods=["GET"],
            ),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(Guard, origins=cors_origins, loopback=loopback, max_body=max_body),
            # Answers the preflight of an allowed origin and marks its replies readable.
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                max_age=600,
            ),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.gateway = gateway
    app.state.stopping = stopping
    return app


def _error_response(error: ServeError) -> Response:
    """The error as an HTTP response, with `retry-after` when the caller should wait."""
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _guarded(
    handler: Callable[[Request], Awaitable[Response]], api_key: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """`handler` behind the API key (when one is set), its errors answered in OpenAI's shape."""

    async def endpoint(request: Request) -> Response:
        if api_key is not None:
            scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
            # The scheme's name is case-insensitive (RFC 9110); the key is compared whole.
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), api_key.encode()
            ):
                return _error_response(
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
            return _error_response(error)
        except LlamaberryError as error:
            return _error_response(error_for(error))

    return endpoint


class _Routes:
    """The endpoint's handlers, over one gateway and the modes it offers."""

    def __init__(self, gateway: Gateway, modes: list[str], reasoning_field: ReasoningField) -> None:
        self.gateway = gateway
        self.modes = modes
        self.reasoning_field: ReasoningField = reasoning_field
        self.responses_api = Responses(gateway, modes)

    async def health(self, request: Request) -> Response:
        """GET /health: the server is up."""
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        """GET /v1/models: every mode, then every mode on each upstream model."""
        names = list(self.modes)
        for upstream in await self.gateway.upstream_models():
            names += [f"{mode}/{upstream}" for mode in self.modes]
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "llamaberry"}
            for name in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        """POST /v1/chat/completions: one run of the mode the model name picks (n runs at
        once for n choices)."""
        chat_request = await _read_request(request)
        mode, upstream = parse_model(chat_request.model, self.modes)
        options = chat_request.options()
        check_options(mode, options)
        # The caller's system message goes to every call as one; single takes images.
        question = conversation_question(
            chat_request.messages, system_apart=True, images=mode == "single"
        )
        passthrough = chat_request.passthrough(mode)
        engine = self.gateway.engine()
        chosen = self.gateway.run_settings(chat_request, upstream)
        reasoning = chat_request.reasoning_format or self.reasoning_field
        replies, streams = [], []
        for index in range(chat_request.n or 1):
            replies.append(
                Reply(chat_request.model, mode, reasoning, shaped=chat_request.shaped, index=index)
            )
            # Bad input raises here, before a call.
            streams.append(
                engine.stream(mode, question, settings=chosen, passthrough=passthrough, **options)  # type: ignore[arg-type]
            )
        if chat_request.stream:
            usage = bool((chat_request.stream_options or {}).get("include_usage"))
            body = _chunks(replies, streams, usage)
            # Held until the first word from upstream: a first call that fails is answered
            # with its own status (429 and retry-after), not a 200 stream with an error in it.
            first = await until_disconnected(request, _first(body))
            # A shutdown's farewell comes after what each choice still held back.
            return SSEResponse(
                _prepend(first, body),
                lambda error: b"".join(r.flushed() for r in replies) + error_event(error),
            )
        runs = await until_disconnected(
            request, asyncio.gather(*(r.collect(s) for r, s in zip(replies, streams, strict=True)))
        )
        for run in runs:
            if run.status != "ok":
                raise failed_run_error(run)
        completion = replies[0].completion(runs[0])
        completion["choices"] = [r.choice(run) for r, run in zip(replies, runs, strict=True)]
        completion["usage"] = _total([r.usage(run) for r, run in zip(replies, runs, strict=True)])
        return JSONResponse(completion)

    async def responses(self, request: Request) -> Response:
        """POST /v1/responses: one run, in the Responses API's shape (see `responses`)."""
        return await self.responses_api.create(request, await _read_body(request, ResponsesRequest))


async def _read_request(request: Request) -> ChatRequest:
    """The request's body as a chat-completions request; 400 for one we cannot act on."""
    return await _read_body(request, ChatRequest)


def _total(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage of n runs, summed."""
    total = dict(usages[0])
    for usage in usages[1:]:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[key] += usage[key]
    total["completion_tokens_details"] = {
        "reasoning_tokens": sum(u["completion_tokens_details"]["reasoning_tokens"] for u in usages)
    }
    return total


async def _chunks(
    replies: list[Reply], streams: list[AsyncIterator[Any]], include_usage: bool
) -> AsyncIterator[bytes]:
    """The chunks of one run, or of n runs at once (each its own choice), ending `[DONE]`."""
    if len(replies) == 1:
        async with contextlib.aclosing(
            replies[0].chunks(streams[0], include_usage=include_usage)
        ) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk
        return
    bodies = {
        index: reply.chunks(stream, include_usage=False, done=False)
        for index, (reply, stream) in enumerate(zip(replies, streams, strict=True))
    }
    async for batch in merge(bodies):
        for _, chunk in batch:
            yield chunk
    if include_usage:
        usage = _total([r.usage(r.run) for r in replies if r.run is not None])
        yield replies[0].usage_chunk(usage)
    yield b"data: [DONE]\n\n"


async def _first(body: AsyncIterator[bytes]) -> bytes:
    return await anext(body)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async with contextlib.aclosing(rest):  # type: ignore[type-var]
        async for chunk in rest:
            yield chunk


async def _not_found(request: Request, error: Exception) -> Response:
    """An unknown route or method, answered in OpenAI's error shape."""
    status = getattr(error, "status_code", 404)
    if status == 405:
        line = f"{request.method} is not allowed on {request.url.path}."
    else:
        line = f"Unknown route {request.method} {request.url.path}: the API is under /v1."
    return _error_response(ServeError(status, line, code="not_found" if status == 404 else None))


async def _read_body(request: Request, schema: type[Body]) -> Body:
    """The request's JSON body read as `schema`; 400 naming the first thing wrong."""
    try:
        body = await request.json()
    except ValueError:
        raise ServeError(400, "The request body is not valid JSON.") from None
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ServeError(400, f"Invalid request: {where}: {first['msg']}.") from None


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    api_key: str | None,
    reasoning_field: ReasoningField = DEFAULT_REASONING_FORMAT,
    on_ready: Callable[[str], None] | None = None,
    options: dict[str, Any] | None = None,
    cors_origins: Sequence[str] = (),
    max_body: int = MAX_BODY,
    max_connections: int | None = None,
) -> None:
    """Run the endpoint until interrupted; `options` are the modes' default options,
    `max_connections` how many may be open at once (default `server.MAX_CONNECTIONS`)."""
    from llamaberry.serve import server

    app = create_app(
        settings,
        api_key=api_key,
        reasoning_field=reasoning_field,
        options=options,
        cors_origins=cors_origins,
        loopback=is_loopback_name(host),
        max_body=max_body,
    )
    connections = server.Connections(
        server.connection_limit(max_connections or server.MAX_CONNECTIONS)
    )
    config = server.config(app, host=host, port=port, connections=connections)
    running = server.Server(config, on_stop=app.state.stopping.request)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/v1")
    _log_runs()
    running.run()


def _log_runs() -> None:
    """Show the endpoint's own log (a line per answered run with its usage) on stderr."""
    import logging

    logger = logging.getLogger("llamaberry.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s llamaberry serve: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
