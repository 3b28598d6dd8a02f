"""A run's events as a chat app reads them: the intermediate work as `reasoning_content`, the
answer as `content`, streamed as server-sent chunks or sent as one completion."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from llamaberry.core.errors import LlamaberryError
from llamaberry.core.events import (
    CallFinished,
    CallStarted,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.core.holdback import HoldBack
from llamaberry.core.results import CallResult, Run, Synthesis, call_title
from llamaberry.serve.schema import ReasoningField, ServeError, error_for, failed_run_error

T = TypeVar("T")

# A call of this kind writes the answer itself (single's reply, steps' closing call), so its
# text streams live as content; every other call is intermediate work.
ANSWER_KIND = "answer"


def final_text(run: Run) -> str:
    """What the chat app shows as the reply: the fullest form of the run's answer."""
    synthesis = next(
        (c for c in reversed(run.result.call_results()) if isinstance(c, Synthesis)), None
    )
    if synthesis is not None and synthesis.comprehensive_answer:
        full = synthesis.comprehensive_answer.strip()
        concise = (synthesis.concise_answer or "").strip()
        return full if not concise or concise in full else f"{full}\n\n**In short:** {concise}"
    return run.answer or ""


class Stopping:
    """Set when the server is asked to stop: every run in flight is cancelled at once (and
    saved as cancelled), and its reply ended with an error saying why."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Remember the server's loop (called in it, at startup)."""
        self.loop = asyncio.get_running_loop()

    def request(self) -> None:
        """Stop the runs; safe to call from a signal handler."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)

    def error(self) -> ServeError:
        return ServeError(
            503,
            "The server is shutting down: the run was cancelled (what finished is kept).",
            kind="server_error",
            code="shutting_down",
        )


def stopping_of(scope: Any) -> Stopping | None:
    """The app's `Stopping`, where it has one."""
    app = scope.get("app") if isinstance(scope, dict) else None
    stopping = getattr(getattr(app, "state", None), "stopping", None)
    return stopping if isinstance(stopping, Stopping) else None


def error_event(error: ServeError) -> bytes:
    """An error as a chat-completions stream's last event."""
    return b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\n"


class SSEResponse(StreamingResponse):
    """A server-sent-events stream; Starlette cancels it when the client disconnects, and a
    server shutdown ends it with `farewell` (an error event) once its run is cancelled."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        farewell: Callable[[ServeError], bytes] = error_event,
    ) -> None:
        super().__init__(content, headers={"cache-control": "no-cache"})
        self.farewell = farewell

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        stopping = stopping_of(scope)
        if stopping is not None:
            self.body_iterator = _until_stopped(self.body_iterator, stopping, self.farewell)  # type: ignore[arg-type]
        await super().__call__(scope, receive, send)


async def _until_stopped(
    chunks: AsyncIterator[bytes], stopping: Stopping, farewell: Callable[[ServeError], bytes]
) -> AsyncIterator[bytes]:
    """`chunks` until the server stops: then the run is cancelled and `farewell` ends it.

    Each chunk is awaited in a task of its own, raced against the stop; whatever ends this
    stream early (the stop, or the client going away) cancels that task, so the run records
    that it was cancelled and is saved."""
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stopping.event.wait())
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                await _cancelled(step)
                yield farewell(stopping.error())
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        stopped.cancel()
        if step is not None and not step.done():
            await _cancelled(step)


async def _cancelled(step: asyncio.Future[Any]) -> None:
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await step


def _retrying(event: TextReset) -> str:
    return f"\n\n*(retrying: {event.reason})*\n\n"


def _held_block(events: list[TextDelta | ThinkingDelta | TextReset]) -> str:
    """What a call that ran beside the streaming one sent, as one block: its thinking, a blank
    line, then its reply; a retry throws away what came before it."""
    retried = ""
    thinking: list[str] = []
    text: list[str] = []
    for event in events:
        if isinstance(event, TextReset):
            thinking.clear()
            text.clear()
            retried = _retrying(event).lstrip()
        else:
            (thinking if isinstance(event, ThinkingDelta) else text).append(event.text)
    said, reply = "".join(thinking), "".join(text)
    return retried + (f"{said}\n\n{reply}" if said else reply)


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
        self.run_id = ""
        self.answer_kind = ANSWER_KIND
        self.reasoning: list[str] = []
        self.content: list[str] = []
        # Calls that started while another streamed (a vote's samples, drafts): their thinking
        # and text are held and sent as one block under the call's heading when it finishes,
        # so concurrent calls never interleave, not even in the upstream model's thinking.
        self._holdback = HoldBack()
        # The call whose thinking was the last thing sent: its reply starts after a blank line.
        self._thinking: tuple[str, int] | None = None

    def _route(self, event: object) -> tuple[str, str] | None:
        """Which part of the reply an event adds to, and the text it adds."""
        if isinstance(event, CallStarted):
            if event.kind == self.answer_kind:
                return None
            if not self._holdback.start((event.kind, event.index)):
                return None
            return "reasoning", self._heading(event.kind, event.index)
        if isinstance(event, CallFinished):
            held = self._holdback.finish((event.kind, event.index))
            after = self._after(event.result)
            if held is None:
                return ("reasoning", after) if after else None
            return "reasoning", self._heading(event.kind, event.index) + _held_block(held) + after
        if isinstance(event, TextDelta | ThinkingDelta | TextReset) and self._holdback.hold(event):
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
                    self.run_id = event.run_id
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
            "prompt_tokens_details": {"cached_tokens": run.usage.cached_tokens},
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


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it the moment the client goes away or the server stops."""
    task = asyncio.ensure_future(work)
    stopping = stopping_of(request.scope)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watchers: set[asyncio.Future[Any]] = {asyncio.ensure_future(watch())}
    if stopping is not None:
        watchers.add(asyncio.ensure_future(stopping.event.wait()))
    try:
        await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for watcher in watchers:
            watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if stopping is not None and stopping.event.is_set():
            raise stopping.error()
        raise ServeError(499, "the client closed the connection", kind="cancelled")
    return task.result()
