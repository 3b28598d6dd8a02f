"""The Responses API: `POST /v1/responses` and `GET /v1/responses/{id}`, the interface OpenAI's SDK
documents first and that agent frameworks and eval harnesses speak by default.

A request rides the chat-completions path: `instructions` and `input` (a string, or items:
messages, earlier outputs, function calls and their outputs) become the conversation, and one
run of the mode the model name picks answers it. The run's intermediate work is a `reasoning`
output item (a summary part per turn, step or draft, under its heading) and the answer a
`message` item, streamed as the API's typed events in their documented order. A stored response
is a run in the history plus the conversation it ends, so `previous_response_id` continues it;
with the history off, the server keeps the latest ones in memory instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llamaberry.core.errors import InputError, LlamaberryError
from llamaberry.core.events import CallStarted
from llamaberry.core.redact import RedactStream
from llamaberry.core.results import Call, Run, call_title
from llamaberry.run.passthrough import Passthrough
from llamaberry.serve.gateway import Gateway, check_options
from llamaberry.serve.reply import (
    Reply,
    SSEResponse,
    final_text,
    until_disconnected,
)
from llamaberry.serve.schema import (
    ChatRequest,
    ServeError,
    conversation_question,
    error_for,
    failed_run_error,
    parse_model,
)

if TYPE_CHECKING:
    from llamaberry.store import Store

log = logging.getLogger("llamaberry.serve")

# Request keys of the Responses API that we read or that are harmless to ignore; any other key
# is an option of the mode, as with chat completions (a mode without it answers 400).
RESPONSES_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_output_tokens",
        "text",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "previous_response_id",
        "store",
        "reasoning",
        "metadata",
        "user",
        "include",
        "truncation",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "background",
        "max_tool_calls",
        "top_logprobs",
    }
)

# How many responses the server remembers when there is no history to keep them in.
MEMORY_LIMIT = 1000


class ResponsesRequest(BaseModel):
    """The part of a Responses API request llamaberry acts on."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] = Field(default_factory=list)
    instructions: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    background: bool | None = None

    def options(self) -> dict[str, Any]:
        """The non-standard keys: the mode's own options."""
        extra = self.model_extra or {}
        return {k: v for k, v in extra.items() if k not in RESPONSES_KEYS}

    @property
    def kept(self) -> bool:
        """Whether the response is stored (the API's default is yes)."""
        return self.store is not False


# -- the request as a conversation ------------------------------------------------------------


def _part_text(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return str(part.get("text", ""))
    if kind == "refusal":
        return str(part.get("refusal", ""))
    raise InputError(f"Only text content is supported (got a {kind} part).")


def _text(content: Any) -> str:
    """A message's or a tool output's content as text."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content if isinstance(part, dict))
    raise InputError("Message content must be a string or a list of text parts.")


def input_messages(given: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's `input` as chat messages; reasoning items are dropped, so no intermediate
    work ever reaches the upstream model again."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    messages: list[dict[str, Any]] = []
    for item in given:
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(
                {"role": item.get("role", "user"), "content": _text(item.get("content"))}
            )
        elif kind == "function_call":
            call = {
                "id": item.get("call_id", ""),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # calls made together are one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id", ""),
                    "content": _text(item.get("output")),
                }
            )
        elif kind != "reasoning":
            raise InputError(
                f"Input items of type {kind} are not supported: send messages, function calls "
                "and function call outputs."
            )
    return messages


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` as chat completions' `response_format` (None for plain text)."""
    shape = (text or {}).get("format") or {"type": "text"}
    kind = shape.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: shape[k] for k in ("name", "description", "schema", "strict") if k in shape}
        return {"type": "json_schema", "json_schema": schema}
    raise InputError(f"text.format must be text, json_object or json_schema (got {kind}).")


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function tools as chat completions declares them; other kinds of tool are refused."""
    declared = []
    for tool in tools:
        if tool.get("type") != "function":
            raise InputError(f"Only function tools are supported (got {tool.get('type')}).")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        declared.append({"type": "function", "function": function})
    return declared


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    raise InputError(f"tool_choice must be auto, none, required or a function (got {choice}).")


def chat_request(
    asked: ResponsesRequest, conversation: list[dict[str, Any]]
) -> tuple[ChatRequest, Passthrough]:
    """The chat-completions request that asks what `asked` asks, over `conversation`, and what
    goes with its calls beside the question (the final call's format and tools, see
    run/passthrough.py)."""
    if asked.background:
        raise InputError("background responses are not supported: each request is one run.")
    system = [{"role": "system", "content": asked.instructions}] if asked.instructions else []
    messages = system + conversation
    body: dict[str, Any] = {
        "model": asked.model,
        "messages": messages,
        "stream": asked.stream,
        "temperature": asked.temperature,
        "max_completion_tokens": asked.max_output_tokens,
        "reasoning_effort": (asked.reasoning or {}).get("effort"),
    }
    fields = {
        "top_p": asked.top_p,
        "user": (asked.model_extra or {}).get("user"),
        "response_format": _response_format(asked.text),
        "tools": _tools(asked.tools) if asked.tools else None,
        "tool_choice": _tool_choice(asked.tool_choice) if asked.tool_choice else None,
        "parallel_tool_calls": asked.parallel_tool_calls if asked.tools else None,
    }
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ServeError(400, f"Invalid request: {where}: {first['msg']}.") from None
    return chat, Passthrough.of(fields, messages)


# -- the run as a response --------------------------------------------------------------------


class ResponseWriter(Reply):
    """Turns one run's events into the Responses API's output items and typed events."""

    def __init__(
        self, asked: ResponsesRequest, mode: str, *, streaming: bool, shaped: bool = False
    ) -> None:
        super().__init__(asked.model, mode, "reasoning_content")
        self.asked = asked
        self.streaming = streaming
        # A JSON reply or tools were asked for: the final call's reply is the answer itself.
        self.shaped = shaped
        self.output: list[dict[str, Any]] = []
        self.item: dict[str, Any] | None = None  # the output item being written
        self.part_open = False  # a reasoning summary part is being written
        self.sequence = 0
        # Set as the run's text is routed: a heading starts a summary part of its own, and a
        # bare heading (a call just started) is not yet something worth answering 200 for.
        self.new_part = False
        self.heading_only = False
        self.parts: AsyncIterator[tuple[str, str] | Run] | None = None
        # The text of the summary part and of the message being written passes through these,
        # so a key the upstream splits between two chunks is caught whole; what they hold
        # back goes out before the part or message is closed.
        self.part_said = RedactStream()
        self.message_said = RedactStream()

    @property
    def response_id(self) -> str:
        return f"resp_{self.run_id}"

    # Reply's hooks: each call's heading begins a summary part, without the blank lines that
    # separate calls in one stream of text.
    def _heading(self, kind: str, index: int) -> str:
        self.new_part = True
        return f"### {call_title(kind, index)}\n\n"

    def _route(self, event: object) -> tuple[str, str] | None:
        if self.shaped and isinstance(event, CallStarted) and event.final:
            # its text (the JSON, or what it says beside its tool calls) streams as the message
            self.answer_kind = event.kind
        routed = super()._route(event)
        self.heading_only = isinstance(event, CallStarted)
        return routed

    def _event(self, kind: str, **fields: Any) -> list[bytes]:
        """One typed event, serialized at once (the items it shows go on changing)."""
        self.sequence += 1
        if not self.streaming:
            return []
        body = {"type": kind, "sequence_number": self.sequence - 1, **fields}
        data = json.dumps(body, ensure_ascii=False)
        return [f"event: {kind}\ndata: {data}\n\n".encode()]

    def _where(self) -> dict[str, Any]:
        assert self.item is not None
        return {"item_id": self.item["id"], "output_index": len(self.output) - 1}

    def _open(self, kind: str, **fields: Any) -> list[bytes]:
        prefix = {"reasoning": "rs", "message": "msg"}.get(kind, "fc")
        self.item = {
            "id": f"{prefix}_{self.run_id}_{len(self.output)}",
            "type": kind,
            **fields,
            "status": "in_progress",
        }
        self.output.append(self.item)
        return self._event(
            "response.output_item.added", output_index=len(self.output) - 1, item=self.item
        )

    def _close_part(self) -> list[bytes]:
        if not self.part_open:
            return []
        events = self._summary_delta(self.part_said.flush())
        self.part_open = False
        assert self.item is not None
        index = len(self.item["summary"]) - 1
        part = self.item["summary"][index]
        where = self._where() | {"summary_index": index}
        return (
            events
            + self._event("response.reasoning_summary_text.done", **where, text=part["text"])
            + self._event("response.reasoning_summary_part.done", **where, part=part)
        )

    def _close(self, status: str = "completed") -> list[bytes]:
        """Finish the output item being written, if any, with `status` (`incomplete` for one a
        failure cut short)."""
        item = self.item
        if item is None:
            return []
        events = self._close_part()
        if item["type"] == "message":
            events += self._text_delta(self.message_said.flush())
            part = item["content"][0]
            where = self._where() | {"content_index": 0}
            events += self._event(
                "response.output_text.done", **where, text=part["text"], logprobs=[]
            )
            events += self._event("response.content_part.done", **where, part=part)
        item["status"] = status
        events += self._event(
            "response.output_item.done", output_index=len(self.output) - 1, item=item
        )
        self.item = None
        return events

    def _reasoning(self, text: str) -> list[bytes]:
        events: list[bytes] = []
        if self.item is None or self.item["type"] != "reasoning":
            events += self._close() + self._open("reasoning", summary=[])
        assert self.item is not None
        if self.new_part or not self.part_open:
            events += self._close_part()
            self.new_part = False
            self.part_open = True
            self.item["summary"].append({"type": "summary_text", "text": ""})
            where = self._where() | {"summary_index": len(self.item["summary"]) - 1}
            events += self._event(
                "response.reasoning_summary_part.added",
                **where,
                part={"type": "summary_text", "text": ""},
            )
        if not self.item["summary"][-1]["text"] and not self.part_said.held:
            text = text.lstrip("\n")
        return events + self._summary_delta(self.part_said.feed(text))

    def _summary_delta(self, text: str) -> list[bytes]:
        """`text` added to the open summary part (already redacted)."""
        if not text:
            return []
        assert self.item is not None
        self.item["summary"][-1]["text"] += text
        where = self._where() | {"summary_index": len(self.item["summary"]) - 1}
        return self._event("response.reasoning_summary_text.delta", **where, delta=text)

    def _content(self, text: str) -> list[bytes]:
        events: list[bytes] = []
        if self.item is None or self.item["type"] != "message":
            events += self._close() + self._open("message", role="assistant", content=[])
            assert self.item is not None
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self.item["content"].append(part)
            events += self._event(
                "response.content_part.added", **self._where(), content_index=0, part=part
            )
        return events + self._text_delta(self.message_said.feed(text))

    def _text_delta(self, text: str) -> list[bytes]:
        """`text` added to the message being written (already redacted)."""
        if not text:
            return []
        assert self.item is not None
        self.item["content"][0]["text"] += text
        return self._event(
            "response.output_text.delta", **self._where(), content_index=0, delta=text, logprobs=[]
        )

    def _take(self, part: str, text: str) -> list[bytes]:
        if part == "reasoning":
            return self._reasoning(text)
        if part == "content":
            return self._content(text)
        return []

    def _usage(self, run: Run) -> dict[str, Any]:
        """The run's usage summed over every call, in the Responses API's names."""
        counted = self.usage(run)
        return {
            "input_tokens": counted["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counted["completion_tokens"],
            "output_tokens_details": counted["completion_tokens_details"],
            "total_tokens": counted["total_tokens"],
        }

    def body(
        self,
        status: str,
        *,
        run: Run | None = None,
        error: ServeError | None = None,
    ) -> dict[str, Any]:
        """The response object as it stands."""
        asked = self.asked
        cut_off = run is not None and bool(run.calls) and run.calls[-1].finish_reason == "length"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "model": asked.model,
            "output": self.output if status != "in_progress" else [],
            "instructions": asked.instructions,
            "previous_response_id": asked.previous_response_id,
            "store": asked.kept,
            "temperature": asked.temperature,
            "top_p": asked.top_p,
            "max_output_tokens": asked.max_output_tokens,
            "text": asked.text or {"format": {"type": "text"}},
            "tools": asked.tools or [],
            "tool_choice": asked.tool_choice or "auto",
            "parallel_tool_calls": asked.parallel_tool_calls is not False,
            "reasoning": {"effort": (asked.reasoning or {}).get("effort"), "summary": None},
            "metadata": asked.metadata or {},
            "truncation": "disabled",
            "usage": self._usage(run) if run is not None else None,
            "error": _failure(error) if error is not None else None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut_off else None,
        }

    def _function_calls(self, final: Call) -> list[bytes]:
        """The final call's tool calls as function_call items, each sent whole."""
        events = self._close()
        for call in final.tool_calls:
            function = call.get("function") or {}
            arguments = str(function.get("arguments") or "")
            events += self._open(
                "function_call",
                call_id=call.get("id", ""),
                name=function.get("name", ""),
                arguments="",
            )
            where = self._where()
            events += self._event(
                "response.function_call_arguments.delta", **where, delta=arguments
            )
            events += self._event(
                "response.function_call_arguments.done", **where, arguments=arguments
            )
            assert self.item is not None
            self.item["arguments"] = arguments
            self.item["status"] = "completed"
            events += self._event(
                "response.output_item.done", output_index=where["output_index"], item=self.item
            )
            self.item = None
        return events

    def _finish(self, run: Run) -> tuple[dict[str, Any], list[bytes]]:
        """The finished response and the events that close its output."""
        final = next((call for call in reversed(run.calls) if call.final), None)
        called = final is not None and bool(final.tool_calls)
        events = [] if self.content or called else self._take("content", final_text(run))
        events += self._close()
        if final is not None and final.tool_calls:
            events += self._function_calls(final)
        cut_off = bool(run.calls) and run.calls[-1].finish_reason == "length"
        return self.body("incomplete" if cut_off else "completed", run=run), events

    def reply_messages(self) -> list[dict[str, Any]]:
        """What this response said, as the assistant's turn of the conversation."""
        said = "".join(
            part["text"]
            for item in self.output
            if item["type"] == "message"
            for part in item["content"]
        )
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            for item in self.output
            if item["type"] == "function_call"
        ]
        if calls:
            return [{"role": "assistant", "content": said or None, "tool_calls": calls}]
        return [{"role": "assistant", "content": said}]

    async def begin(self, events: AsyncIterator[Any]) -> list[tuple[str, str] | Run]:
        """Read the run until it has said something (or ended): a run that fails before then
        is answered with its real HTTP status (a 429 is a 429), not a stream."""
        self.parts = self._events(events)
        first: list[tuple[str, str] | Run] = []
        async for item in self.parts:
            first.append(item)
            if isinstance(item, Run):
                if item.status != "ok":
                    raise failed_run_error(item)
                break
            if item[0] != "start" and not self.heading_only:
                break
        return first

    async def stream(
        self, first: list[tuple[str, str] | Run], keep: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> AsyncIterator[bytes]:
        """The response as server-sent typed events, from `response.created` to
        `response.completed` (or `response.failed`)."""
        for kind in ("response.created", "response.in_progress"):
            for chunk in self._event(kind, response=self.body("in_progress")):
                yield chunk
        try:
            for item in first:
                for chunk in await self._step(item, keep):
                    yield chunk
            if self.parts is not None and not (first and isinstance(first[-1], Run)):
                async for item in self.parts:
                    for chunk in await self._step(item, keep):
                        yield chunk
        except LlamaberryError as error:  # the runner settles most failures; this is the rest
            for chunk in self._failed(error_for(error)):
                yield chunk

    async def _step(
        self, item: tuple[str, str] | Run, keep: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> list[bytes]:
        if not isinstance(item, Run):
            return self._take(*item)
        if item.status != "ok":
            return self._failed(failed_run_error(item))
        body, events = self._finish(item)
        await keep(body)  # before the client hears it is done, so it can continue at once
        return events + self._event(f"response.{body['status']}", response=body)

    def _failed(self, error: ServeError) -> list[bytes]:
        """The end of a response that failed: what was held back, the item being written
        closed as incomplete, then `response.failed` with the error."""
        events = self._close("incomplete")
        return events + self._event("response.failed", response=self.body("failed", error=error))

    def farewell(self, error: ServeError) -> bytes:
        """How a server shutdown ends this stream once its run is cancelled: as a failure, in
        the Responses API's events (a chat completion's bare error is not one of them)."""
        return b"".join(self._failed(error))

    async def collect_body(
        self, events: AsyncIterator[Any], keep: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> dict[str, Any]:
        """The whole run as one response (for a non-streaming request)."""
        run: Run | None = None
        async for item in self._events(events):
            if isinstance(item, Run):
                run = item
            else:
                self._take(*item)
        if run is None:
            raise ServeError(500, "the run ended without a result", kind="server_error")
        if run.status != "ok":
            raise failed_run_error(run)
        body, _ = self._finish(run)
        await keep(body)
        return body


def _failure(error: ServeError) -> dict[str, Any]:
    """A failed response's `error`, in the Responses API's codes."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "message": error.body()["error"]["message"]}


# -- the routes -------------------------------------------------------------------------------


class Responses:
    """The Responses API's routes, over the gateway's engines and their history."""

    def __init__(self, gateway: Gateway, modes: list[str]) -> None:
        self.gateway = gateway
        self.modes = modes
        # Responses kept while there is no history to keep them in (newest last).
        self.memory: OrderedDict[str, str] = OrderedDict()

    def _store(self) -> Store | None:
        return self.gateway.engine().history

    async def _keep(self, response_id: str, run_id: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False)
        store = self._store()
        if store is None:
            self.memory[response_id] = data
            while len(self.memory) > MEMORY_LIMIT:
                self.memory.popitem(last=False)
            return
        try:
            await asyncio.to_thread(store.save_response, response_id, run_id, data)
        except LlamaberryError as error:  # the answer matters more than its record
            log.warning("llamaberry serve: response %s not kept: %s", response_id, error)

    async def _find(self, response_id: str) -> dict[str, Any]:
        data = self.memory.get(response_id)
        store = self._store()
        if data is None and store is not None:
            data = await asyncio.to_thread(store.find_response, response_id)
        if data is None:
            raise ServeError(404, f"No response with id '{response_id}'.", code="not_found")
        record: dict[str, Any] = json.loads(data)
        return record

    async def create(self, request: Request, asked: ResponsesRequest) -> Response:
        """POST /v1/responses: one run of the mode the model name picks."""
        mode, upstream = parse_model(asked.model, self.modes)
        conversation: list[dict[str, Any]] = []
        if asked.previous_response_id:
            conversation = list((await self._find(asked.previous_response_id))["conversation"])
        conversation += input_messages(asked.input)
        chat, passthrough = chat_request(asked, conversation)
        options = asked.options()
        check_options(mode, options)
        question = conversation_question(chat.messages)
        # bad input raises here, before a call; store: false keeps the run out of the history
        events = self.gateway.engine().open(
            mode,  # type: ignore[arg-type]
            question,
            options,
            history=asked.kept,
            settings=self.gateway.run_settings(chat, upstream),
            passthrough=passthrough,
        )
        writer = ResponseWriter(asked, mode, streaming=asked.stream, shaped=passthrough.shaped)

        async def keep(body: dict[str, Any]) -> None:
            if asked.kept:
                said = conversation + writer.reply_messages()
                await self._keep(
                    body["id"], writer.run_id, {"response": body, "conversation": said}
                )

        if asked.stream:
            first = await until_disconnected(request, writer.begin(events))
            return SSEResponse(writer.stream(first, keep), writer.farewell)
        return JSONResponse(await until_disconnected(request, writer.collect_body(events, keep)))

    async def retrieve(self, request: Request) -> Response:
        """GET /v1/responses/{id}: a stored response (404 for an unknown id)."""
        record = await self._find(request.path_params["response_id"])
        return JSONResponse(record["response"])
