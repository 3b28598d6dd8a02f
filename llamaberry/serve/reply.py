"""A run's events as a chat app reads them: the intermediate work as `reasoning_content`, the
answer as `content`, streamed as server-sent chunks or sent as one completion."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
from llamaberry.core.redact import RedactStream
from llamaberry.core.results import Call, CallResult, Run, Synthesis, call_title
from llamaberry.serve.schema import ReasoningField, ServeError, error_for, failed_run_error

T = TypeVar("T")

log = logging.getLogger("llamaberry.serve")

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


def final_call(run: Run) -> Call | None:
    """The run's final call (the one the request's format, tools and stop went with)."""
    return next((call for call in reversed(run.calls) if call.final), None)


def finish_reason(run: Run) -> str:
    """Why the reply ended, as OpenAI says it: its final call's tool calls, or its cut-off."""
    final = final_call(run)
    if final is not None and final.tool_calls:
        return "tool_calls"
    if final is not None and final.finish_reason == "length":
        return "length"
    return "stop"


def log_usage(run: Run, usage: dict[str, Any]) -> None:
    """One line in the server's log per answered run, whether or not the client asked for usage."""
    log.info(
        "run %s (%s): %d prompt + %d completion tokens in %.1fs",
        run.id,
        run.mode,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        run.seconds,
    )


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

    def __init__(
        self,
        model: str,
        mode: str,
        reasoning_field: ReasoningField,
        *,
        shaped: bool = False,
        index: int = 0,
    ) -> None:
        self.model = model
        self.mode = mode
        # A reply that must parse (JSON, tool calls) keeps its content clean of inline thinking.
        if shaped and reasoning_field == "think":
            reasoning_field = "reasoning_content"
        self.inline = reasoning_field == "think"
        self.fields: list[str] = (
            ["reasoning_content", "reasoning"]
            if reasoning_field == "both"
            else []
            if reasoning_field in ("think", "none")
            else [reasoning_field]
        )
        # The final call's text is the content as it streams (JSON, or text beside tool calls).
        self.shaped = shaped
        self._final: tuple[str, int] | None = None
        # Which of the request's n choices this reply is.
        self.index = index
        # A word from upstream has arrived: before it, a failure still gets its own status.
        self.heard = False
        self._think_open = False
        # The finished run, once it is.
        self.run: Run | None = None
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
        # Each streamed field's text passes through its own redactor, so a key the upstream
        # splits between two chunks is caught whole (inline thinking shares the content's).
        self._said = {"content": RedactStream(), "reasoning": RedactStream()}

    def _route(self, event: object) -> tuple[str, str] | None:
        """Which part of the reply an event adds to, and the text it adds."""
        if isinstance(event, CallStarted):
            if event.final and self.shaped:
                self._final = (event.kind, event.index)
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
            if event.kind == self.answer_kind or (event.kind, event.index) == self._final:
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
                if not self.heard and type(event) in (TextDelta, ThinkingDelta):
                    self.heard = True
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
        self.run = run
        if run.status == "ok":
            log_usage(run, self.usage(run))
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
        """The reply's content: what streamed as the answer, else the run's final text (for
        a reply that must parse, the final call's own text)."""
        if self.shaped:
            final = final_call(run)
            return "".join(self.content) or (final.reply if final is not None else "")
        return "".join(self.content) or final_text(run)

    def choice(self, run: Run) -> dict[str, Any]:
        """The run as one choice of a non-streaming chat completion."""
        answer = self.answer(run)
        reasoning = "".join(self.reasoning)
        if self.inline and reasoning:
            answer = f"<think>\n{reasoning.strip()}\n</think>\n\n{answer}"
        final = final_call(run)
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        for name in self.fields:
            message[name] = reasoning
        if final is not None and final.tool_calls:
            message["tool_calls"] = final.tool_calls
            message["content"] = answer or None
        logprobs = final.logprobs if final is not None else None
        return {
            "index": self.index,
            "message": message,
            "logprobs": {"content": logprobs} if logprobs is not None else None,
            "finish_reason": finish_reason(run),
        }

    def completion(self, run: Run) -> dict[str, Any]:
        """One non-streaming chat completion for a finished run."""
        return {
            "id": f"chatcmpl-{run.id}",
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [self.choice(run)],
            "usage": self.usage(run),
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": self.index, "delta": delta, "finish_reason": finish}
        if "logprobs" in extra:
            choice["logprobs"] = extra.pop("logprobs")
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice] if delta or finish or "logprobs" in choice else [],
            **extra,
        }
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        """The chunk that carries a stream's usage (the last before `[DONE]`)."""
        return self._chunk({}, usage=usage)

    def _piece(self, part: str, text: str) -> bytes:
        """The chunk of one routed piece, inline thinking opened and closed around it (empty
        when all its text is held back, as the start of what may be a key)."""
        if part == "start":
            return self._chunk({"role": "assistant", "content": ""})
        if part == "content":
            if self._think_open:
                self._think_open = False
                text = "\n</think>\n\n" + text
            return self._said_chunk("content", text)
        if self.inline:
            if not self._think_open:
                self._think_open = True
                text = "<think>\n" + text
            return self._said_chunk("content", text)
        if not self.fields:
            return b""
        return self._said_chunk("reasoning", text)

    def _said_chunk(self, field: str, text: str, *, flush: bool = False) -> bytes:
        """The chunk of `text` for a field (the content, or the reasoning fields), as much of
        it as its redactor lets out now (with `flush`, all it held back)."""
        said = self._said[field]
        text = said.flush() if flush else said.feed(text)
        if not text:
            return b""
        names = self.fields if field == "reasoning" else ["content"]
        return self._chunk({name: text for name in names})

    def flushed(self) -> bytes:
        """The chunks of the text still held back (before anything that ends the stream)."""
        return self._said_chunk("content", "", flush=True) + self._said_chunk(
            "reasoning", "", flush=True
        )

    def _ending(self, run: Run) -> list[bytes]:
        """The chunks after the streamed parts: the answer if it did not stream, the tool
        calls, the log-probabilities, and the finish."""
        out = []
        if not self.content:
            answer = self.answer(run)
            if answer or self._think_open:
                out.append(self._piece("content", answer))
        out.append(self.flushed())
        final = final_call(run)
        if final is not None and final.tool_calls:
            calls = [{"index": i, **call} for i, call in enumerate(final.tool_calls)]
            out.append(self._chunk({"tool_calls": calls}))
        if final is not None and final.logprobs is not None:
            out.append(self._chunk({}, logprobs={"content": final.logprobs}))
        out.append(self._chunk({}, finish_reason(run)))
        return out

    async def chunks(
        self, events: AsyncIterator[Any], *, include_usage: bool, done: bool = True
    ) -> AsyncIterator[bytes]:
        """The run as server-sent chat-completion chunks, ending with `[DONE]` (unless `done`
        is False: one of n choices, whose stream the caller ends).

        Nothing is yielded until a word has come from upstream (or the run has ended): a run
        whose first call fails before that raises its `ServeError`, so the client gets the real
        status (a 429 with retry-after) rather than a 200 stream with an error event in it.
        """
        run: Run | None = None
        pending: list[bytes] | None = []
        try:
            async for item in self._events(events):
                if isinstance(item, Run):
                    run = item
                    break
                piece = self._piece(*item)
                if pending is None:
                    if piece:
                        yield piece
                    continue
                pending.append(piece)
                if self.heard:
                    yield b"".join(pending)
                    pending = None
        except LlamaberryError as error:  # the runner settles most failures; this is the rest
            if pending is not None:
                raise error_for(error) from None
            yield (
                self.flushed() + b"data: " + json.dumps(error_for(error).body()).encode() + b"\n\n"
            )
            return
        if run is None or run.status != "ok":
            failure = failed_run_error(run) if run is not None else ServeError(500, "no result")
            if pending is not None:
                raise failure
            yield self.flushed() + error_event(failure)
            return
        self.run = run
        log_usage(run, self.usage(run))
        yield b"".join(pending or []) + b"".join(self._ending(run))
        if include_usage:
            yield self.usage_chunk(self.usage(run))
        if done:
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
