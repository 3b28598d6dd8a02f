"""What every mode shares: its declaration (`ModeSpec`), checking the question, making one
streamed call into events, and the run's lifecycle (started, finished, failed or cancelled, with
nothing that finished lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamaberry.core.errors import InputError, LlamaberryError, RunTimeoutError
from llamaberry.core.events import (
    CallFinished,
    CallNote,
    CallStarted,
    NoteKind,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.core.json_reply import JSONSchema, ResponseFormat
from llamaberry.core.options import Options
from llamaberry.core.prices import price_run
from llamaberry.core.results import (
    Call,
    CallKind,
    CutOffBy,
    FinalAnswer,
    Message,
    ModeResult,
    Run,
    Usage,
    call_title,
)
from llamaberry.core.settings import Settings
from llamaberry.providers.base import ChatClient, Completion, Delta, Restart, Thinking
from llamaberry.providers.deadline import Deadline
from llamaberry.providers.tokens import estimate_tokens
from llamaberry.run.context import Fit, context_window, cut_off_by, fit
from llamaberry.run.loops import LoopGuard, find_loop
from llamaberry.run.passthrough import Passthrough, closing_messages
from llamaberry.run.replay import Replay, played

# C0 controls other than tab, newline and carriage return, plus DEL: never typed on purpose.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Half of a UTF-16 pair on its own (a byte that was not UTF-8, read with surrogateescape, or an
# emoji cut in two): not text, and no server can be sent it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_question(question: object, max_chars: int) -> str:
    """Return the question stripped, or raise `InputError` saying what is wrong with it."""
    if not isinstance(question, str):
        raise InputError(f"The question must be text, not {type(question).__name__}.")
    question = question.strip()
    if not question:
        raise InputError("The question is empty.")
    if len(question) > max_chars:
        raise InputError(
            f"The question is {len(question):,} characters long; the limit is {max_chars:,} "
            "(LLAMABERRY_MAX_QUESTION_CHARS)."
        )
    bad = _CONTROL.search(question)
    if bad:
        raise InputError(
            f"The question contains a control character (U+{ord(bad.group()):04X}) "
            f"at position {bad.start() + 1}; remove it and try again."
        )
    lone = _SURROGATE.search(question)
    if lone:
        raise InputError(
            f"The question contains a lone surrogate (U+{ord(lone.group()):04X}) at position "
            f"{lone.start() + 1}, which is not text; check how it was encoded."
        )
    return question


def to_messages(pairs: Sequence[tuple[str, str]]) -> list[Message]:
    """Turn (role, content) pairs from `prompts` into messages."""
    return [Message(role=role, content=content) for role, content in pairs]  # type: ignore[arg-type]


@dataclass
class CallReply:
    """One call's reply as the run settled it: what the provider sent (its text, thinking,
    usage, seconds and attempts), and what the run found (a loop it stopped, the limit that cut
    the reply off)."""

    text: str
    finish_reason: str | None
    usage: Usage
    seconds: float
    attempts: int = 1
    # The model's own thinking, never part of `text`.
    thinking: str = ""
    # How the reply was asked to be JSON, if it was: the schema, or any JSON object.
    response_format: ResponseFormat | None = None
    # The loop guard stopped the reply: `text` keeps what came before the loop.
    looped: bool = False
    # Which limit a reply that ended in "length" ran into.
    cut_off_by: CutOffBy | None = None
    # The tools the model called (chat-completions shape), and the log-probabilities asked for.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None

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


@dataclass(frozen=True)
class _Plan:
    """How one call goes out: the form of its messages that fits (`fit`), the window it was
    fitted into, the budget it was fitted to and the budget it is sent with."""

    fit: Fit
    window: int | None
    budget: int  # the call's own budget, else the run's
    # Lowered to fit the window, else the call's own (None: the client's default).
    sent: int | None


class _Reading:
    """One call's reply while it streams: the pieces so far, the loop guard over them, and
    the reply as far as it got when the guard or the mode stops reading early."""

    __slots__ = ("guard", "parts", "plan", "record", "started", "thinking", "until")

    def __init__(
        self, record: Call, plan: _Plan, guard: bool, until: Callable[[], bool] | None
    ) -> None:
        self.record = record
        self.plan = plan
        self.guard = LoopGuard() if guard else None
        self.until = until
        # Pieces are joined once, not appended to the record per delta, which would copy the
        # whole reply again for every token of a long one.
        self.parts: list[str] = []
        self.thinking: list[str] = []
        self.started = time.perf_counter()

    def stop_after(self, text: str, json_reply: bool) -> CallReply | None:
        """After a delta `text` was handed on: the reply so far if reading stops here (the
        loop guard saw a loop, or the mode's `until` says so), else None."""
        guard = self.guard
        # A JSON reply arrives whole, with its usage just behind it, so only a streamed one is
        # worth stopping early.
        if guard is not None and guard.feed(text) and not json_reply:
            assert guard.loop is not None
            # Charged with what it spent before it was stopped.
            spent = estimate_tokens(guard.text)
            return self._cut_short(guard.text[: guard.loop.kept], spent, looped=True)
        if self.until is not None and self.until():
            # The usage a server sends comes at the end of a stream, which was never read.
            text = "".join(self.parts)
            thinking = "".join(self.thinking)
            reply = self._cut_short(text, estimate_tokens(text + thinking))
            self.record.closed_early = True
            return reply
        return None

    def restart(self) -> None:
        """The attempt failed and is retried: forget what it streamed."""
        self.parts.clear()
        self.thinking.clear()
        if self.guard is not None:
            self.guard = LoopGuard()
        self.record.attempts += 1

    def failed(self, error: BaseException) -> None:
        """Record a failed or cancelled call, with the partial text it got."""
        record = self.record
        record.reply = "".join(self.parts)
        record.thinking = "".join(self.thinking)
        record.seconds = time.perf_counter() - self.started
        record.error = str(error) if isinstance(error, LlamaberryError) else type(error).__name__

    def _cut_short(self, text: str, spent: int, looped: bool = False) -> CallReply:
        # A stream we stopped reading never sent its usage: `spent` is our estimate.
        prompt = self.plan.fit.prompt
        reply = CallReply(
            text=text,
            finish_reason=None,
            usage=Usage(prompt_tokens=prompt, completion_tokens=spent, total_tokens=prompt + spent),
            seconds=time.perf_counter() - self.started,
            attempts=self.record.attempts,
            looped=looped,
            thinking="".join(self.thinking),
        )
        _record(self.record, reply)
        return reply


class RunContext:
    """One run in progress: the client it calls and the `Run` it fills in."""

    def __init__(
        self,
        client: ChatClient,
        settings: Settings,
        run: Run,
        passthrough: Passthrough | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.run = run
        self.reply: CallReply | None = None
        # What the caller asked of the upstream model beside the question (none: nothing).
        self.passthrough = passthrough or Passthrough()
        # Calls an earlier, unfinished run of the same question already paid for.
        self.replay = replay

    async def window(self) -> int | None:
        """The model's context window: the setting, else what the endpoint says (asked once)."""
        if self.settings.context is not None:
            return self.settings.context or None  # 0 means: do not check
        return await context_window(self.client)

    @property
    def result(self) -> Any:
        """The mode's own result in the run, filled in as the calls finish."""
        return self.run.result

    async def call(
        self,
        kind: CallKind,
        index: int,
        messages: list[Message],
        *,
        json_mode: bool = False,
        schema: JSONSchema | None = None,
        max_tokens: int | None = None,
        announce: bool = True,
        condensed: Iterable[list[Message]] = (),
        temperature: float | None = None,
        until: Callable[[], bool] | None = None,
        final: bool = False,
        as_sent: bool = False,
    ) -> AsyncIterator[CallStarted | TextDelta | ThinkingDelta | TextReset | CallNote]:
        """Make one call and yield its events; afterwards `self.reply` holds its `CallReply`.

        `schema` asks for a JSON reply of that shape, `max_tokens` bounds this call's reply
        below the run's budget. `condensed` are shorter forms of `messages`, most condensed
        last, for when the whole does not fit the model's context window (an iterator is
        only read that far). A request that cannot fit in any form is never sent:
        `ContextTooLongError` is raised first.
        `until` is asked after each piece of text has been handed on: when it says True the
        stream is closed there and the reply is what came so far (the call is marked
        `closed_early`), as when a mode's own limit is reached.
        A `final` call is the run's last word: the caller's response_format, tools and stop go
        with it (run/passthrough.py), and it is told to answer in that form; `as_sent` sends
        the caller's conversation as it came in place of `messages` (single's only call).
        """
        extra, messages, condensed = self.passthrough.apply(
            index, messages, condensed, final=final, as_sent=as_sent
        )
        plan = await self._fit(kind, index, messages, condensed, max_tokens)
        record = self._record_call(kind, index, plan, final)
        if announce:
            yield CallStarted(kind=kind, index=index, final=final)
        if plan.fit.level or plan.fit.max_tokens is not None:
            yield self._fitted_note(kind, index, plan)
        json_reply = json_mode or schema is not None
        reading = _Reading(record, plan, self.settings.loop_guard, until)
        # The run's own sampling settings go with each call (an engine's runs may differ).
        if temperature is None:
            temperature = self.settings.temperature
        options = _options(json_mode, schema, plan.sent, temperature, extra)
        stream = self._stream(record, plan, options)
        try:
            # Closed at once when the loop guard stops reading, so the connection is dropped
            # and the server stops generating.
            async with _closing(stream):
                async for item in stream:
                    if isinstance(item, Delta):
                        reading.parts.append(item.text)
                        yield TextDelta(kind=kind, index=index, text=item.text)
                        stopped = reading.stop_after(item.text, json_reply)
                        if stopped is not None:
                            self.reply = stopped
                            break
                    elif isinstance(item, Thinking):
                        reading.thinking.append(item.text)
                        yield ThinkingDelta(kind=kind, index=index, text=item.text)
                    elif isinstance(item, Restart):
                        reading.restart()
                        yield TextReset(kind=kind, index=index, reason=item.reason)
                    else:
                        reading.parts = [item.text]
                        self.reply = self._settle(reading, item)
        except BaseException as error:
            reading.failed(error)
            raise
        if self.reply is not None and self.reply.looped:
            yield self.note(
                kind,
                index,
                "looped",
                f"{call_title(kind, index)} kept repeating itself, so it was stopped; its text "
                "up to the loop is kept (--no-loop-guard lets a reply run on).",
            )

    def _stream(self, record: Call, plan: _Plan, options: dict[str, Any]) -> AsyncIterator[Any]:
        """The call's reply as a stream: the client's, or played back when an unfinished
        earlier run of this question had this very call answered (then nothing is sent)."""
        replay = self.replay
        replayed = replay.take(record.kind, record.index, record.messages) if replay else None
        if replayed is not None:
            return played(replayed)
        return self.client.stream(plan.fit.messages, **options)

    async def _fit(
        self,
        kind: CallKind,
        index: int,
        messages: list[Message],
        condensed: Iterable[list[Message]],
        max_tokens: int | None,
    ) -> _Plan:
        """The form of the call's messages that fits the model's context window, and the
        budget left for its reply (`ContextTooLongError` when no form fits)."""
        window = await self.window()
        self.run.context_window = window
        budget = max_tokens or self.settings.max_tokens
        forms = itertools.chain([messages], condensed)
        fitted = fit(forms, window, budget, title=call_title(kind, index))
        # The budget sent: the call's own (else the run's), or less where the context window
        # leaves less room.
        sent = fitted.max_tokens if fitted.max_tokens is not None else budget
        return _Plan(fitted, window, budget, sent)

    def _record_call(self, kind: CallKind, index: int, plan: _Plan, final: bool) -> Call:
        """The record of a call about to go out, added to the run's calls."""
        record = Call(
            kind=kind,
            index=index,
            messages=plan.fit.messages,
            max_tokens=plan.fit.max_tokens,
            condensed=plan.fit.level > 0,
            final=final,
        )
        self.reply = None
        self.run.calls.append(record)
        return record

    def _fitted_note(self, kind: CallKind, index: int, plan: _Plan) -> CallNote:
        """The note saying how a call was condensed or its budget lowered to fit."""
        title, level = call_title(kind, index), plan.fit.level
        lowered, budget = plan.fit.max_tokens, plan.budget
        turns = "the turns" if kind == "synthesis" else "the earlier turns"
        given = f"{turns} condensed (their critiques and answers)"
        write = f"may write {lowered or budget:,} tokens, not {budget:,},"
        line = (
            f"{title} was given {given} and {write}"
            if level and lowered is not None
            else f"{title} was given {given}"
            if level
            else f"{title} {write}"
        )
        return self.note(
            kind,
            index,
            "condensed" if level else "budget",
            f"{line} to fit the model's {plan.window:,}-token context window.",
        )

    def _settle(self, reading: _Reading, completion: Completion) -> CallReply:
        """The finished reply as the run keeps it: cut at a loop the guard saw in it, or told
        which limit cut it off; recorded in the call."""
        text, looped, cut_off = completion.text, False, None
        guard = reading.guard
        if guard is not None and (guard.loop or find_loop(text)):
            loop = guard.loop or find_loop(text)
            assert loop is not None
            text, looped = text[: loop.kept], True
        elif completion.truncated:
            plan = reading.plan
            limit = cut_off_by(completion.usage, plan.sent or plan.budget, plan.window)
            # A budget lowered to fit the window was the window's doing.
            lowered = plan.fit.max_tokens is not None and limit == "max_tokens"
            cut_off = "context" if lowered else limit
        reply = CallReply(
            text=text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            seconds=completion.seconds,
            attempts=completion.attempts,
            thinking=completion.thinking,
            response_format=completion.response_format,
            looped=looped,
            cut_off_by=cut_off,
            tool_calls=completion.tool_calls,
            logprobs=completion.logprobs,
        )
        record = reading.record
        _record(record, reply)
        record.tool_calls = completion.tool_calls
        record.logprobs = completion.logprobs
        record.response_format = completion.response_format
        record.queued_seconds = completion.queued
        if completion.model and self.run.served_model is None:
            self.run.served_model = completion.model
        return reply

    def child(self) -> RunContext:
        """A context for one of several concurrent calls: the same client, settings and run,
        but its own `reply`, so calls in flight together do not overwrite each other's."""
        return RunContext(self.client, self.settings, self.run, self.passthrough, self.replay)

    async def closing_call(self, answer: str) -> AsyncIterator[Any]:
        """When the caller asked for a form (JSON, tools) and the mode reached its answer
        without a final call (vote's count, reflect's chain): one more call that gives
        `answer` in that form, as the run's final call. Nothing otherwise."""
        if not self.passthrough.shaped:
            return
        messages = to_messages(closing_messages(self.run.question, answer))
        async for event in self.call("answer", 1, messages, final=True):
            yield event
        reply = self.reply
        assert reply is not None
        yield CallFinished(kind="answer", index=1, result=FinalAnswer(**reply.result_fields()))

    def note(self, kind: CallKind, index: int, note: NoteKind, line: str) -> CallNote:
        """Record `line` in the run's notes and return it as an event for the call."""
        self.run.notes.append(line)
        return CallNote(kind=kind, index=index, note=note, message=line)


def _options(
    json_mode: bool,
    schema: JSONSchema | None,
    max_tokens: int | None,
    temperature: float | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, object]:
    """The options of a call's `stream`. Only what is set is passed on, so a chat client of
    one's own written before these options existed still takes the calls that do not use them."""
    options: dict[str, object] = {"json_mode": json_mode}
    if schema is not None:
        options["schema"] = schema
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if temperature is not None:
        options["temperature"] = temperature
    if extra:
        options["extra"] = extra
    return options


def _record(record: Call, reply: CallReply) -> None:
    """Write a settled reply into its call's record."""
    record.reply = reply.text
    record.thinking = reply.thinking
    record.finish_reason = reply.finish_reason
    record.usage = reply.usage
    record.attempts = reply.attempts
    record.seconds = reply.seconds
    record.looped = reply.looped
    record.cut_off_by = reply.cut_off_by


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[object]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


ModeBody = Callable[[RunContext], AsyncIterator]


@dataclass(frozen=True)
class ModeSpec:
    """A mode, declared once: everything the engine, CLI, UI, compare, eval and history need.

    `run(ctx, options)` yields the mode's events and fills in `ctx.result`, an instance of
    `result`; `options` is the one model that holds (and range-checks) the mode's options.
    `extra_entries` lets compare show more than one column for a run (refine's first turn).
    """

    name: str
    description: str
    options: type[Options]
    run: Callable[[RunContext, Any], AsyncIterator]
    result: type[ModeResult]
    # Part of compare's and eval's default set of modes (the costly ones are asked for by name).
    default: bool = True
    extra_entries: Callable[[Run], list[tuple[str, Any]]] | None = None


class RunStream:
    """A run's events, with the `Run` they build, so a consumer such as the history can save
    what has finished at each event."""

    def __init__(self, run: Run, events: AsyncIterator) -> None:
        self.run = run
        self._events = events

    def __aiter__(self) -> AsyncIterator:
        # The events themselves, so a loop over the stream pays no wrapper per event.
        return self._events

    async def __anext__(self) -> Any:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop the run (it is recorded as cancelled) if it has not ended."""
        await self._events.aclose()  # type: ignore[attr-defined]


def drive(
    client: ChatClient,
    settings: Settings,
    spec: ModeSpec,
    question: str,
    options: Options,
    passthrough: Passthrough | None = None,
    replay: Replay | None = None,
) -> RunStream:
    """Run `spec` as a mode: wrap its events in RunStarted/RunFinished and settle the run.

    A failure ends the stream with a failed run (and its error line) rather than an exception,
    so every consumer sees what finished. Cancellation is recorded and then propagates.
    """
    run = Run(
        mode=spec.name,
        model=client.model,
        provider=client.provider,
        question=question,
        # The run records the options it really used beside the endpoint's settings.
        settings={**settings.public(), **options.model_dump(mode="json")},
        result=spec.result(mode=spec.name),
    )
    context = RunContext(client, settings, run, passthrough, replay)
    return RunStream(run, _lifecycle(client, spec, context, options))


async def _lifecycle(
    client: ChatClient, spec: ModeSpec, context: RunContext, options: Options
) -> AsyncIterator:
    run, settings = context.run, context.settings
    started = time.perf_counter()

    def settle(status: str, error: str | None = None, kind: str | None = None) -> None:
        run.status = status  # type: ignore[assignment]
        run.error = error
        run.error_kind = kind
        run.seconds = time.perf_counter() - started
        run.usage = Usage.total([c.usage for c in run.calls])
        price_run(run)  # its cost, and for a Batch API run whether it is at list price
        run.queued_seconds = sum(c.queued_seconds or 0.0 for c in run.calls)

    yield RunStarted(run_id=run.id, mode=run.mode, model=run.model, question=run.question)
    # A first run in a fresh process may wait for the SDK's import; that is not its time.
    await client.ready()
    started = time.perf_counter()
    events = spec.run(context, options)
    loop = asyncio.get_running_loop()
    limit = settings.run_timeout
    deadline = None if limit is None else loop.time() + limit
    bound = None if deadline is None else Deadline(deadline)
    try:
        while True:
            try:
                if bound is None:
                    event = await anext(events)
                else:
                    # Per event, so a slow consumer's time is not charged to the run.
                    with bound:
                        event = await anext(events)
            except StopAsyncIteration:
                break
            except TimeoutError:
                if deadline is None or loop.time() < deadline:
                    raise
                message = (
                    f"the run took longer than its {limit:g}s bound (--run-timeout); "
                    "what finished is kept"
                )
                for call in run.calls:
                    if call.error == "CancelledError":  # the call the bound interrupted
                        call.error = message
                raise RunTimeoutError(message) from None
            yield event
    except LlamaberryError as error:
        # A call that failed, rather than one cancelled because a concurrent call failed.
        failed = next(
            (c for c in reversed(run.calls) if c.error and c.error != "CancelledError"), None
        ) or next((c for c in reversed(run.calls) if c.error), None)
        run._exception = error
        settle(
            "failed",
            f"{call_title(failed.kind, failed.index)} failed: {error}" if failed else str(error),
            error.kind,
        )
    except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
        settle("cancelled", "cancelled before it finished", "cancelled")
        raise
    else:
        settle("ok")
    finally:
        if bound is not None:
            bound.cancel()
    yield RunFinished(run=run)
