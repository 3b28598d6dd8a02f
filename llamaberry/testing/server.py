"""`FakeServer`: the fake Groq/OpenAI chat-completions server (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import logging
import math
import os
import shutil
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from llamaberry.testing.batches import BatchDesk
from llamaberry.testing.http import (
    _DONE,
    _LAST_CHUNK,
    _STREAM_LIMIT,
    _certificate,
    _Drop,
    _dumps,
    _error,
    _fault_body,
    _format_duration,
    _head,
    _http_chunk,
    _HttpError,
    _read_request,
    _Request,
    _send,
    _sse,
)
from llamaberry.testing.replies import (
    Fault,
    Handler,
    RecordedRequest,
    Reply,
    Scripted,
    _cut_to_budget,
    _held_to_schema,
    _is_json_object,
    _pieces,
    _usage,
    _word_count,
    cached_prefix_tokens,
    estimate_prompt_tokens,
    finish_of,
    logprobs_of,
    tool_call_parts,
)

log = logging.getLogger("llamaberry.testing")


# How many recent chat requests' prompts the fake prompt cache holds.
_CACHED_PROMPTS = 64

DEFAULT_MODELS: tuple[str, ...] = (
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
    "qwen/qwen3.6-27b",
    "llama-3.1-8b-instant",
)


DEFAULT_DECOMMISSIONED: frozenset[str] = frozenset(
    {"llama-3.3-70b-versatile", "llama-3.1-70b-versatile"}
)


DEFAULT_CONTEXT_WINDOW = 131072


_WINDOW_SECONDS = 60.0


_UNLIMITED = 1_000_000


_CHAT_PATHS = frozenset({"/openai/v1/chat/completions", "/v1/chat/completions"})


_MODEL_PATHS = frozenset({"/openai/v1/models", "/v1/models"})


# What a client reads to learn the model's context window (llama.cpp's and Ollama's own APIs).
_PROPS_PATH = "/props"


_HEALTH_PATH = "/health"


_SHOW_PATH = "/api/show"


# Without a budget or a window, a looping reply stops after this many words.
_LOOP_CAP = 4096


Flavor: TypeAlias = Literal["groq", "openai", "vllm", "llamacpp", "ollama"]


def _strict_schema_problem(schema: Any, path: str = "schema") -> str | None:
    """Why a schema breaks strict structured-output rules, or None when it keeps them."""
    if not isinstance(schema, dict):
        return f"{path} must be an object"
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    if schema.get("type") == "object" or properties:
        if schema.get("additionalProperties") is not False:
            return f"'additionalProperties' is required to be supplied and to be false at {path}"
        names = list(properties)
        missing = [name for name in names if name not in (schema.get("required") or [])]
        if missing:
            return f"'required' must include every property at {path}; missing {missing}"
        for name in names:
            problem = _strict_schema_problem(properties[name], f"{path}.{name}")
            if problem:
                return problem
    if isinstance(schema.get("items"), dict):
        return _strict_schema_problem(schema["items"], f"{path}.items")
    return None


@dataclass
class _Charge:
    at: float
    tokens: int


@dataclass(frozen=True)
class _Rejection:
    kind: Literal["requests", "tokens"]
    limit: int
    used: int
    requested: int
    wait: float


class FakeServer:
    """An in-process fake Groq/OpenAI chat-completions server; see ``llamaberry.testing``."""

    def __init__(
        self,
        models: Iterable[str] | None = None,
        decommissioned: Iterable[str] | None = None,
        api_key: str | None = None,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        limit_window: float = _WINDOW_SECONDS,
        max_context: int | None = None,
        json_validation: bool = True,
        json_schema: bool = True,
        default: str | Reply | Fault | Handler | None = None,
        served_model: str | None = None,
        slots: int | None = None,
        flavor: Flavor = "groq",
        tls: bool | Sequence[str] = False,
        prompt_cache: bool = True,
    ) -> None:
        self.served_model = served_model
        self.models: list[str] = (
            [served_model]
            if served_model is not None
            else list(DEFAULT_MODELS if models is None else models)
        )
        self.decommissioned: set[str] = set(
            DEFAULT_DECOMMISSIONED if decommissioned is None else decommissioned
        )
        self.api_key = api_key
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit
        # Seconds the rate limits are counted over; tests shorten it to see roll-overs quickly.
        self.limit_window = limit_window
        self.max_context = max_context
        self.json_validation = json_validation
        self.json_schema = json_schema
        # Which real server to play where they differ: where the context window is published
        # (the model list, llama.cpp's /props, Ollama's /api/show), how a request over it is
        # refused, and whether a reply is stopped when the window fills up.
        self.flavor: Flavor = flavor
        self.default = default
        # Report cached prompt tokens as Groq does: the longest prefix a recent request shared.
        self.prompt_cache = prompt_cache
        self.rate_limited = 0
        if slots is not None and slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        # Created on first use, in the loop that serves requests.
        self._slot_gate: asyncio.Semaphore | None = None
        # How many TCP connections clients have opened: reused keep-alive connections count once.
        self.connections_opened = 0
        # With tls: how many of them ended in a failed handshake (the client did not trust us).
        self.handshakes_failed = 0

        # One lock guards everything the test thread and the server loop both touch.
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._handler: Handler | None = None
        self._requests: list[RecordedRequest] = []
        self._discovery: list[RecordedRequest] = []
        self._charges: deque[_Charge] = deque()
        # (model, messages) of the latest chat requests: what the prompt cache holds.
        self._cached_prompts: deque[tuple[str, list[Any]]] = deque(maxlen=_CACHED_PROMPTS)
        self._ids = itertools.count(1)

        self._not_serving_yet()

        # The Batch API (/files, /batches): its files, batches and faults (see testing.batches).
        self.batches = BatchDesk(self._batch_line)
        # The requests that batch lines carried, in the order they were answered.
        self.batch_requests: list[RecordedRequest] = []

        # HTTPS: the server's TLS context, and the PEM file of the CA a client must trust.
        self._tls: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        self._use_tls(tls)

    def _not_serving_yet(self) -> None:
        # Set by start(), in the loop that serves (or a thread of its own, for sync tests).
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    def _use_tls(self, tls: bool | Sequence[str]) -> None:
        if isinstance(tls, str):
            raise TypeError("tls takes True or a list of names, not one string")
        if tls:
            names = ("127.0.0.1", "localhost") if tls is True else tuple(tls)
            self._tls, self.ca_file = _certificate(names)
            # The CA file outlives stop(), so a client may still read it; gone with the server.
            weakref.finalize(self, shutil.rmtree, os.path.dirname(self.ca_file), True)

    # ----------------------------------------------------------------- scripting API

    def enqueue(self, *replies: str | Reply | Fault) -> None:
        """Queue replies for the next chat requests, answered in FIFO order."""
        for reply in replies:
            if not isinstance(reply, str | Reply | Fault):
                raise TypeError(f"cannot enqueue {type(reply).__name__}; use str, Reply or Fault")
        with self._lock:
            self._queue.extend(replies)

    def reply_with(self, handler: Handler | None) -> None:
        """Answer requests (once the queue is empty) with ``handler(request)``; may be async."""
        with self._lock:
            self._handler = handler

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order, except model discovery."""
        with self._lock:
            return list(self._requests)

    @property
    def discovery_requests(self) -> list[RecordedRequest]:
        """The requests that asked about models (the model list, ``/props``, ``/api/show``).

        Kept apart from ``requests`` because clients make them once, on their own, to learn
        what the endpoint serves; tests usually count the chat requests.
        """
        with self._lock:
            return list(self._discovery)

    @property
    def pending(self) -> int:
        """How many queued replies have not been used yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget queued replies, the handler, recorded requests and rate-limit history."""
        with self._lock:
            self._queue.clear()
            self._handler = None
            self._requests.clear()
            self._discovery.clear()
            self._charges.clear()
            self._cached_prompts.clear()
            self.rate_limited = 0

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("FakeServer is not running")
        return self._port

    @property
    def groq_base_url(self) -> str:
        """Base URL for ``groq.Groq``/``groq.AsyncGroq``."""
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI``/``openai.AsyncOpenAI``."""
        return f"{self._scheme}://127.0.0.1:{self.port}/v1"

    @property
    def _scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listening in the running event loop."""
        if self._server is not None:
            raise RuntimeError("FakeServer is already running")
        # A deep backlog keeps a burst of a thousand connects from hitting SYN retries.
        self._server = await asyncio.start_server(
            self._serve_connection, "127.0.0.1", 0, backlog=4096, limit=_STREAM_LIMIT
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open connection, hung ones included."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.batches.aclose()
        await server.wait_closed()
        self._port = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> FakeServer:
        if self._thread is not None:
            raise RuntimeError("FakeServer is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="llamaberry-fake-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("FakeServer thread did not start listening")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        self._thread = self._thread_loop = self._thread_stop = None
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be gone
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)

    # ----------------------------------------------------------------- connections

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        try:
            if self._tls is not None:
                # The handshake here rather than in start_server, so a client that refuses the
                # certificate is seen (and counted) instead of vanishing inside asyncio.
                try:
                    await writer.start_tls(self._tls)
                except (OSError, asyncio.IncompleteReadError):  # ssl.SSLError is an OSError
                    self.handshakes_failed += 1
                    return
            while True:
                try:
                    request = await _read_request(reader, writer)
                except _HttpError as exc:
                    body = _error(exc.message, "invalid_request_error")
                    await _send(writer, exc.status, body, keep_alive=False)
                    return
                if request is None or not await self._dispatch(request, reader, writer):
                    return
        except (_Drop, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the peer went away or we were told to vanish; nothing to report
        except asyncio.CancelledError:
            # Swallowed on purpose: asyncio's client_connected_cb wrapper would log it.
            pass
        except Exception:
            log.exception("fake server failed while handling a request")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return whether the connection may be reused."""
        try:
            parsed = json.loads(request.body) if request.body else {}
        except ValueError:
            parsed = None
        tls = writer.get_extra_info("ssl_object")
        recorded = RecordedRequest(
            request.method,
            request.path,
            request.headers,
            parsed if isinstance(parsed, dict) else {},
            tls=tls.version() if tls is not None else None,
            proxied_for=request.origin,
        )
        keep_alive = request.keep_alive
        path, method = request.path, request.method
        # llama.cpp's /props: played by the llamacpp flavor, and by any server with slots.
        props = (
            path == _PROPS_PATH
            and method == "GET"
            and (self.flavor == "llamacpp" or self.slots is not None)
        )
        show = path == _SHOW_PATH and method == "POST" and self.flavor == "ollama"
        discovery = (path in _MODEL_PATHS and method == "GET") or props or show
        with self._lock:
            (self._discovery if discovery else self._requests).append(recorded)

        if props:  # asked before any key, as llama.cpp answers it
            await _send(writer, 200, self._props_payload(), keep_alive)
            return keep_alive
        llamacpp = self.flavor == "llamacpp"
        if llamacpp and path == _HEALTH_PATH and method == "GET":
            await _send(writer, 200, {"status": "ok"}, keep_alive)
            return keep_alive
        # Groq and OpenAI have a Batch API; llama.cpp's and Ollama's servers have none.
        if BatchDesk.handles(path) and self.flavor not in ("llamacpp", "ollama"):
            return await self._batch_api(request, writer, keep_alive)
        if not ((path in _CHAT_PATHS and method == "POST") or discovery):
            if llamacpp:  # its words, an integer code, and the connection closed
                error: dict[str, Any] = {"message": "File Not Found", "type": "not_found_error"}
                error["code"] = 404
                body = {"error": error}
                await _send(writer, 404, body, False)
                return False
            body = _error(
                f"Unknown request URL: {method} {path}. Please check the URL for typos.",
                "invalid_request_error",
                "unknown_url",
            )
            await _send(writer, 404, body, keep_alive)
            return keep_alive

        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            body = _error("Invalid API Key", "invalid_request_error", "invalid_api_key")
            limits = self._limit_headers() if path in _CHAT_PATHS else None
            await _send(writer, 401, body, keep_alive, limits)
            return keep_alive

        if path in _MODEL_PATHS:
            await _send(writer, 200, self._models_payload(), keep_alive)
            return keep_alive
        if show:
            await _send(writer, *self._show_payload(recorded), keep_alive)
            return keep_alive

        if not isinstance(parsed, dict):
            body = _error("Request body must be a JSON object.", "invalid_request_error")
            await _send(writer, 400, body, keep_alive, self._limit_headers())
            return keep_alive
        return await self._chat(recorded, reader, writer, keep_alive)

    @property
    def context_window(self) -> int:
        """The window this server plays (``max_context``, or a large hosted model's)."""
        return self.max_context or DEFAULT_CONTEXT_WINDOW

    def _models_payload(self) -> dict[str, Any]:
        window = self.context_window
        data = []
        for model in self.models:
            entry: dict[str, Any] = {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": "fake",
            }
            if self.flavor in ("groq", "openai"):
                entry.update(active=True, context_window=window)
            elif self.flavor == "vllm":
                entry["max_model_len"] = window
            elif self.flavor == "llamacpp":
                # n_ctx is what one slot runs with (as /props says), n_ctx_train the model's.
                entry.update(owned_by="llamacpp", aliases=[model], tags=[])
                entry["architecture"] = {
                    "input_modalities": ["text"],
                    "output_modalities": ["text"],
                }
                entry["meta"] = {
                    "n_ctx": window,
                    "n_ctx_train": window * 8,
                    "n_params": 135_000_000,
                }
            data.append(entry)
        if self.flavor == "llamacpp":
            # llama.cpp also lists its models Ollama's way, beside the OpenAI list.
            listed = [{"name": m, "model": m, "type": "model"} for m in self.models]
            return {"models": listed, "object": "list", "data": data}
        return {"object": "list", "data": data}

    def _props_payload(self) -> dict[str, Any]:
        """llama.cpp's ``GET /props``: the running context is ``n_ctx``, the slots ``total_slots``."""
        return {
            "default_generation_settings": {"n_ctx": self.context_window, "params": {}},
            "total_slots": self.slots if self.slots is not None else 1,
            "model_path": self.models[0] if self.models else "model.gguf",
            "chat_template": "",
        }

    def _show_payload(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        """Ollama's ``POST /api/show``: ``num_ctx`` in the parameters is the running window."""
        name = request.body.get("model") or request.body.get("name")
        if name not in self.models:
            return 404, {"error": f"model '{name}' not found"}
        return 200, {
            "parameters": f'num_ctx                        {self.context_window}\nstop "<|im_end|>"',
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            "details": {"format": "gguf", "family": "llama"},
        }

    # ----------------------------------------------------------------- chat completions

    def _invalid(self, request: RecordedRequest, prompt_tokens: int) -> tuple[int, Any] | None:
        """The (status, body) a real server would refuse this request with, if any."""
        model = request.model
        if model is None or not isinstance(request.body.get("messages"), list):
            message = "`model` (string) and `messages` (array) are required."
            return 400, _error(message, "invalid_request_error", "invalid_request")
        if self.served_model is not None or self.flavor == "llamacpp":
            model = self.models[0]  # one model, whatever the request named
        elif model in self.decommissioned:
            message = f"The model `{model}` has been decommissioned and is no longer supported."
            return 400, _error(message, "invalid_request_error", "model_decommissioned")
        if model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return 404, _error(message, "invalid_request_error", "model_not_found")
        refused = self._refused_format(request)
        if refused is not None:
            return 400, _error(refused, "invalid_request_error", param="response_format")
        if self.max_context is not None:
            return self._over_context(request, prompt_tokens, self.max_context)
        return None

    def _refused_format(self, request: RecordedRequest) -> str | None:
        """Why the request's ``response_format`` is refused, or None when it is taken."""
        fmt = request.body.get("response_format")
        if fmt is None:
            return None
        kind = request.response_format
        if kind not in ("text", "json_object", "json_schema"):
            return (
                f"response_format.type must be one of text, json_object, json_schema, not {kind!r}"
            )
        if kind != "json_schema":
            return None
        if not self.json_schema:
            return (
                f"This model does not support response format `json_schema`: "
                f"`{request.model}` takes `json_object` only."
            )
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            return "response_format.json_schema.schema is required"
        if spec.get("strict") is True:
            problem = _strict_schema_problem(spec["schema"])
            if problem:
                return f"invalid JSON schema for response_format (strict mode): {problem}"
        return None

    def _over_context(
        self, request: RecordedRequest, prompt: int, window: int
    ) -> tuple[int, Any] | None:
        """Refuse a request that does not fit the window, in the played server's words."""
        budget = request.max_tokens
        if self.flavor in ("llamacpp", "ollama"):
            # These start any prompt that fits and stop the reply when the window is full.
            if prompt <= window:
                return None
            if self.flavor == "ollama":
                return 400, _error("the input length exceeds the context length", "api_error")
            body = _error(
                f"request ({prompt} tokens) exceeds the available context size ({window} "
                "tokens), try increasing it",
                "exceed_context_size_error",
                n_prompt_tokens=prompt,
                n_ctx=window,
            )
            body["error"]["code"] = 400
            return 400, body
        if prompt + (budget or 0) <= window:
            return None
        if self.flavor == "groq":
            body = _error(
                "Please reduce the length of the messages or completion.",
                "invalid_request_error",
                "context_length_exceeded",
                param="messages",
            )
            return 400, body
        if budget:
            message = (
                f"This model's maximum context length is {window} tokens. However, you "
                f"requested {prompt + budget} tokens ({prompt} in the messages, {budget} in the "
                "completion). Please reduce the length of the messages or completion."
            )
        else:
            message = (
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {prompt} tokens. Please reduce the length of the messages."
            )
        if self.flavor == "vllm":  # vLLM's error object is not wrapped in "error"
            return 400, {
                "object": "error",
                "message": message,
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        return 400, _error(message, "invalid_request_error", "context_length_exceeded")

    def _shape(self, request: RecordedRequest, reply: Reply, prompt: int) -> Reply:
        """A looping reply played out to its end, and (on servers that stop there) any reply
        cut where the context window fills up. The budget's cut comes later, for every reply."""
        room = None
        if self.max_context is not None and self.flavor in ("llamacpp", "ollama"):
            room = max(0, self.max_context - prompt)
        if reply.repeat is not None:
            limits = [n for n in (request.max_tokens, room) if n is not None]
            cap = min(limits) if limits else _LOOP_CAP
            have = _word_count(reply.text) + _word_count(reply.reasoning)
            per = _word_count(reply.repeat)
            times = max(0, -(-(cap - have) // per)) + 1  # past the limit, so it is cut there
            reply = dataclasses.replace(reply, text=reply.text + reply.repeat * times)
        return _cut_to_budget(reply, room)

    async def _chat(
        self,
        request: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
    ) -> bool:
        prompt_tokens = estimate_prompt_tokens(request.messages)
        invalid = self._invalid(request, prompt_tokens)
        llamacpp = self.flavor == "llamacpp"
        if invalid is not None:
            # llama.cpp closes the connection after every error it answers.
            keep_alive = keep_alive and not llamacpp
            await _send(writer, *invalid, keep_alive, self._limit_headers())
            return keep_alive
        model = request.model or ""

        charge = self._admit(prompt_tokens)
        if isinstance(charge, _Rejection):
            await self._send_rate_limited(writer, model, charge, keep_alive)
            return keep_alive

        try:
            reply, scripted = await self._choose_reply(request)
        except Exception as exc:
            log.exception("reply_with/default handler raised")
            body = _error(
                f"fake server handler raised {type(exc).__name__}: {exc}", "internal_server_error"
            )
            await _send(writer, 500, body, keep_alive, self._limit_headers())
            return keep_alive

        if isinstance(reply, Fault):
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            return await self._fault(request, reply, reader, writer, keep_alive)
        undeclared = [c["name"] for c in reply.tool_calls if c["name"] not in request.tools]
        if undeclared:
            message = f"Tool call validation failed: the request declares no tool {undeclared[0]!r}"
            body = _error(message, "invalid_request_error", "tool_use_failed")
            await _send(writer, 400, body, keep_alive, self._limit_headers())
            return keep_alive
        # A reply scripted to end in "length" plays one cut off by the request's budget, so it
        # is charged the whole budget, as a real server's would be.
        scripted_cut = reply.finish_reason == "length" and reply.usage is None
        if llamacpp and request.json_schema is not None:
            reply = _held_to_schema(reply, request.json_schema)
        reply = self._shape(request, reply, prompt_tokens)

        if scripted and self._refuses_json(request, reply):
            body = _error(
                "Failed to generate JSON. Please adjust your prompt. "
                "See 'failed_generation' for more details.",
                "invalid_request_error",
                "json_validate_failed",
                failed_generation=reply.text,
            )
            await _send(writer, 400, body, keep_alive, self._limit_headers())
            return keep_alive

        reply = _cut_to_budget(reply, request.max_tokens)
        usage = _usage(reply, prompt_tokens, request.max_tokens if scripted_cut else None)
        with self._lock:
            if charge is not None:
                charge.tokens = usage["prompt_tokens"] + usage["completion_tokens"]
        cached = self._read_cache(request, model)
        # A reply scripted with its own usage reports that usage and nothing else (llama.cpp
        # always names its cached tokens).
        if reply.usage is None and self.prompt_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        elif llamacpp:
            usage["prompt_tokens_details"] = {"cached_tokens": 0}
        # llama.cpp closes the connection after a streamed reply, though its headers say
        # keep-alive: a client that reuses it at once finds it gone.
        reused = keep_alive and not request.stream if llamacpp else keep_alive
        await self._answer_in_slot(request, reply, usage, writer, keep_alive)
        return reused

    async def _batch_api(
        self, request: _Request, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        """/files and /batches, behind the same key as every other route."""
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            body = _error("Invalid API Key", "invalid_request_error", "invalid_api_key")
            await _send(writer, 401, body, keep_alive)
            return keep_alive
        status, payload, kind = await self.batches.dispatch(
            request.method, request.path, request.headers, request.body
        )
        await _send(writer, status, payload, keep_alive, content_type=kind)
        return keep_alive

    async def _batch_line(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One line of a batch, answered as the chat endpoint would answer it un-streamed,
        outside the per-minute limits (as the providers run batches)."""
        request = RecordedRequest("POST", "/v1/chat/completions", {}, body)
        with self._lock:
            self.batch_requests.append(request)
        prompt_tokens = estimate_prompt_tokens(request.messages)
        invalid = self._invalid(request, prompt_tokens)
        if invalid is not None:
            return invalid
        reply, scripted = await self._choose_reply(request)
        if isinstance(reply, Fault):
            return 500, _error("a fault was scripted for this request", "internal_server_error")
        reply = self._shape(request, reply, prompt_tokens)
        if scripted and self._refuses_json(request, reply):
            body = _error(
                "Failed to generate JSON. Please adjust your prompt. "
                "See 'failed_generation' for more details.",
                "invalid_request_error",
                "json_validate_failed",
                failed_generation=reply.text,
            )
            return 400, body
        reply = _cut_to_budget(reply, request.max_tokens)
        usage = _usage(reply, prompt_tokens, None)
        return 200, self._completion(request, reply, usage)

    def _read_cache(self, request: RecordedRequest, model: str) -> int:
        """Prompt tokens the cache holds for this request; then it holds this one's prompt too."""
        messages = request.messages
        with self._lock:
            earlier = [m for name, m in self._cached_prompts if name == model]
            self._cached_prompts.append((model, messages))
        return cached_prefix_tokens(messages, earlier) if self.prompt_cache else 0

    def _refuses_json(self, request: RecordedRequest, reply: Reply) -> bool:
        """Whether the reply fails JSON mode the way Groq refuses it (json_validate_failed)."""
        return (
            self.json_validation
            and self.flavor != "llamacpp"  # its grammar holds the reply to JSON; it never refuses
            and request.json_mode
            and not _is_json_object(reply.text)
        )

    async def _answer_in_slot(
        self,
        request: RecordedRequest,
        reply: Reply,
        usage: dict[str, Any],
        writer: asyncio.StreamWriter,
        keep_alive: bool,
    ) -> None:
        """Answer now, or with ``slots`` once one of the server's slots is free."""
        if self.slots is None:
            await self._answer(request, reply, usage, writer, keep_alive)
            return
        # A request waits here, sending nothing, until one of the server's slots is free.
        if self._slot_gate is None:
            self._slot_gate = asyncio.Semaphore(self.slots)
        async with self._slot_gate:
            await self._answer(request, reply, usage, writer, keep_alive)

    async def _answer(
        self,
        request: RecordedRequest,
        reply: Reply,
        usage: dict[str, Any],
        writer: asyncio.StreamWriter,
        keep_alive: bool,
    ) -> None:
        latency = self.latency if reply.latency is None else reply.latency
        delay = self.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        timings: dict[str, float] | None = None
        if self.slots is not None or self.flavor == "llamacpp":
            # llama.cpp's own account of the time a reply spent in its slot: the latency
            # stands for reading the prompt, the pacing for generating the reply.
            paced = len(self._stream_steps(request, reply, usage)) - 1 if request.stream else 0
            details = usage.get("prompt_tokens_details")
            cache_n = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
            timings = {
                "prompt_n": usage["prompt_tokens"] - cache_n,
                "cache_n": cache_n,
                "prompt_ms": round(latency * 1000, 3),
                "predicted_n": usage["completion_tokens"],
                "predicted_ms": round(delay * paced * 1000, 3),
            }
        if latency > 0:
            await asyncio.sleep(latency)
        headers = self._limit_headers()
        if reply.headers:
            headers.update(reply.headers)

        if request.stream:
            steps = self._stream_steps(request, reply, usage, timings=timings)
            await self._stream(writer, steps, headers, delay, keep_alive)
        else:
            payload = self._completion(request, reply, usage)
            if timings is not None:
                payload["timings"] = timings
            await _send(writer, 200, payload, keep_alive, headers)
        request._answered.append(time.monotonic())

    async def _choose_reply(self, request: RecordedRequest) -> tuple[Reply | Fault, bool]:
        """Pick the reply; the flag says whether a script (not the echo fallback) chose it."""
        with self._lock:
            queued = self._queue.popleft() if self._queue else None
            handler = self._handler
        candidates: list[Any] = [queued] if queued is not None else [handler, self.default]
        for source in candidates:
            if source is None:
                continue
            result = source(request) if callable(source) else source
            if inspect.isawaitable(result):
                result = await result
            if result is None:
                continue  # a handler may decline and let the next source answer
            if isinstance(result, str):
                return Reply(result), True
            if isinstance(result, Reply | Fault):
                return result, True
            raise TypeError(f"a reply must be str, Reply or Fault, not {type(result).__name__}")
        user = request.user or ""
        text = _dumps({"echo": user}).decode() if request.json_mode else f"echo: {user}"
        return Reply(text), False

    def _new_ids(self) -> tuple[str, str, int]:
        n = next(self._ids)
        return f"chatcmpl-fake{n:06d}", f"req_fake{n:06d}", int(time.time())

    def _completion(
        self, request: RecordedRequest, reply: Reply, usage: dict[str, Any]
    ) -> dict[str, Any]:
        completion_id, request_id, created = self._new_ids()
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["tool_calls"] = tool_call_parts(reply)
            message["content"] = reply.text or None
        if reply.reasoning is not None:
            if reply.thinking_as == "think_tags":
                message["content"] = f"<think>{reply.reasoning}</think>\n\n{reply.text}"
            else:
                message[reply.thinking_as] = reply.reasoning
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": self._answering_model(request),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": {"content": logprobs_of(reply.text)}
                    if request.body.get("logprobs")
                    else None,
                    "finish_reason": finish_of(reply),
                }
            ],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        }
        if self.flavor == "llamacpp":  # no logprobs key unless they were asked for
            del payload["choices"][0]["logprobs"]
        if request.provider == "groq":
            payload["x_groq"] = {"id": request_id}
        return payload

    def _answering_model(self, request: RecordedRequest) -> str | None:
        """The model a reply names: a one-model server names its own, whatever was asked."""
        if self.served_model is not None:
            return self.served_model
        return self.models[0] if self.flavor == "llamacpp" and self.models else request.model

    def _stream_steps(
        self,
        request: RecordedRequest,
        reply: Reply,
        usage: dict[str, Any] | None,
        content_limit: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[bytes]:
        """SSE payloads, one per pacing step; with ``usage=None`` the stream has no ending."""
        completion_id, request_id, created = self._new_ids()
        groq = request.provider == "groq"
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self._answering_model(request),
            "system_fingerprint": "fp_fake",
        }

        llamacpp = self.flavor == "llamacpp"

        asked_logprobs = bool(request.body.get("logprobs"))

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            text = delta.get("content")
            if asked_logprobs and text:
                choice["logprobs"] = {"content": logprobs_of(text)}
            elif not llamacpp:  # llama.cpp sends no logprobs key unless asked for them
                choice["logprobs"] = None
            return _sse({**base, "choices": [choice], **extra})

        first_extra: dict[str, Any] = {"x_groq": {"id": request_id}} if groq else {}
        # llama.cpp opens with a null content, the hosted APIs with an empty string.
        steps = [chunk({"role": "assistant", "content": None if llamacpp else ""}, **first_extra)]
        if reply.reasoning:
            thinking = _pieces(reply.reasoning, reply.chunk_words)
            if reply.thinking_as == "think_tags":
                tagged = ["<thi", "nk>", *thinking, "</th", "ink>\n\n"]
                steps += [chunk({"content": p}) for p in tagged]
            else:
                steps += [chunk({reply.thinking_as: p}) for p in thinking]
        content = _pieces(reply.text, reply.chunk_words)
        if content_limit is not None:
            content = content[:content_limit]
        steps += [chunk({"content": p}) for p in content]
        # Each tool call: its id and name first, then its arguments in two pieces.
        for number, call in enumerate(tool_call_parts(reply)):
            head = {**call, "index": number, "function": {**call["function"], "arguments": ""}}
            steps.append(chunk({"tool_calls": [head]}))
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                steps.append(
                    chunk({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})
                )
        if usage is None:
            return steps

        last_extra: dict[str, Any] = {"x_groq": {"id": request_id, "usage": usage}} if groq else {}
        options = request.body.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        # llama.cpp sends its timings on the usage chunk, or on the finishing one without it.
        if timings is not None and not with_usage:
            last_extra["timings"] = timings
        ending = chunk({}, finish_of(reply), **last_extra)
        if with_usage:
            usage_extra = {"timings": timings} if timings is not None else {}
            ending += _sse({**base, "choices": [], "usage": usage, **usage_extra})
        steps.append(ending + _DONE)
        return steps

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        steps: list[bytes],
        headers: dict[str, str],
        delay: float,
        keep_alive: bool,
        complete: bool = True,
    ) -> None:
        all_headers = {
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **headers,
        }
        head = _head(200, all_headers, keep_alive)
        tail = _LAST_CHUNK if complete else b""
        if delay <= 0:
            # Nothing to pace, so one write keeps a thousand concurrent streams cheap.
            writer.write(head + b"".join(map(_http_chunk, steps)) + tail)
            await writer.drain()
            return
        writer.write(head + _http_chunk(steps[0]))
        await writer.drain()
        for index, step in enumerate(steps[1:], start=2):
            await asyncio.sleep(delay)
            writer.write(_http_chunk(step) + (tail if index == len(steps) else b""))
            await writer.drain()

    async def _fault(
        self,
        request: RecordedRequest,
        fault: Fault,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
    ) -> bool:
        if fault.kind == "status":
            headers = self._limit_headers()
            if fault.headers:
                headers.update(fault.headers)
            if isinstance(fault.body, str):
                await _send(
                    writer,
                    fault.status_code,
                    fault.body.encode(),
                    keep_alive,
                    headers,
                    content_type="text/plain; charset=utf-8",
                )
            else:
                body = fault.body if fault.body is not None else _fault_body(fault.status_code)
                await _send(writer, fault.status_code, body, keep_alive, headers)
            return keep_alive

        if fault.kind == "stream_error":
            assert isinstance(fault.body, dict)
            headers = self._limit_headers()
            if not request.stream:
                await _send(writer, 500, fault.body, keep_alive, headers)
                return keep_alive
            steps = self._stream_steps(request, Reply(fault.text), None, content_limit=fault.after)
            prefix = b"event: error\n" if fault.as_event else b""
            steps.append(prefix + _sse(fault.body))
            await self._stream(writer, steps, headers, self.chunk_delay, keep_alive)
            return keep_alive

        if fault.kind == "raw":
            cuts = [0, *fault.pause_at, len(fault.data)]
            for start, end in itertools.pairwise(cuts):
                if start:
                    await asyncio.sleep(0.005)
                writer.write(fault.data[start:end])
                await writer.drain()
            if fault.keep_open:
                return True
            raise _Drop

        if fault.kind == "hang":
            # Parked until the client gives up (EOF) or stop() cancels this task.
            await reader.read()
        if fault.kind in ("drop", "hang"):
            raise _Drop

        # drop_after / truncate: start a well-formed response, then cut it short.
        reply = Reply(fault.text)
        headers = self._limit_headers()
        if request.stream:
            pieces = len(_pieces(fault.text, 1))
            limit = fault.after if fault.kind == "drop_after" else pieces // 2
            steps = self._stream_steps(request, reply, None, content_limit=limit)
            await self._stream(writer, steps, headers, self.chunk_delay, False, complete=False)
        else:
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            payload = _dumps(self._completion(request, reply, usage))
            all_headers = {
                "content-type": "application/json",
                "content-length": str(len(payload)),
                **headers,
            }
            writer.write(_head(200, all_headers, False) + payload[: len(payload) // 2])
            await writer.drain()
        raise _Drop

    # ----------------------------------------------------------------- rate limiting

    def _prune(self, now: float) -> None:
        while self._charges and now - self._charges[0].at >= self.limit_window:
            self._charges.popleft()

    def _admit(self, prompt_tokens: int) -> _Charge | _Rejection | None:
        """Charge the window for a new request, or say why it does not fit (``None``: no limits)."""
        if self.rpm_limit is None and self.tpm_limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            used_requests = len(self._charges)
            used_tokens = sum(c.tokens for c in self._charges)
            if self.rpm_limit is not None and used_requests + 1 > self.rpm_limit:
                wait = self._charges[0].at + self.limit_window - now if self._charges else 0.0
                self.rate_limited += 1
                return _Rejection("requests", self.rpm_limit, used_requests, 1, wait)
            if self.tpm_limit is not None and used_tokens + prompt_tokens > self.tpm_limit:
                # Wait until enough old charges expire for this prompt to fit.
                wait, freed = self.limit_window, 0
                for c in self._charges:
                    freed += c.tokens
                    if used_tokens - freed + prompt_tokens <= self.tpm_limit:
                        wait = c.at + self.limit_window - now
                        break
                self.rate_limited += 1
                return _Rejection("tokens", self.tpm_limit, used_tokens, prompt_tokens, wait)
            charge = _Charge(now, prompt_tokens)
            self._charges.append(charge)
            return charge

    def _limit_headers(self) -> dict[str, str]:
        if self.flavor == "llamacpp" and self.rpm_limit is None and self.tpm_limit is None:
            return {}  # llama.cpp has no rate limits and sends no such headers
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            requests = len(self._charges)
            tokens = sum(c.tokens for c in self._charges)
            reset = self._charges[0].at + self.limit_window - now if self._charges else 0.0
        rpm, tpm = self.rpm_limit, self.tpm_limit
        return {
            "x-ratelimit-limit-requests": str(rpm if rpm is not None else _UNLIMITED),
            "x-ratelimit-remaining-requests": str(
                max(0, rpm - requests) if rpm is not None else _UNLIMITED - 1
            ),
            "x-ratelimit-reset-requests": _format_duration(reset if rpm is not None else 0),
            "x-ratelimit-limit-tokens": str(tpm if tpm is not None else _UNLIMITED),
            "x-ratelimit-remaining-tokens": str(
                max(0, tpm - tokens) if tpm is not None else _UNLIMITED
            ),
            "x-ratelimit-reset-tokens": _format_duration(reset if tpm is not None else 0),
        }

    async def _send_rate_limited(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        rejection: _Rejection,
        keep_alive: bool,
    ) -> None:
        r = rejection
        label = "requests per minute (RPM)" if r.kind == "requests" else "tokens per minute (TPM)"
        message = (
            f"Rate limit reached for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on {label}: Limit {r.limit}, Used {r.used}, Requested {r.requested}. "
            f"Please try again in {_format_duration(r.wait)}."
        )
        headers = self._limit_headers()
        headers["retry-after"] = str(max(1, math.ceil(r.wait)))
        body = _error(message, r.kind, "rate_limit_exceeded")
        await _send(writer, 429, body, keep_alive, headers)
