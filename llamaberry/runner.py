"""What every mode shares: checking the question, making one streamed call into events, and
the run's lifecycle (started, finished, failed or cancelled, with nothing that finished lost).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence

from .clients import ChatClient, Completion, Delta, JSONSchema, Restart
from .config import Settings
from .errors import InputError, LlamaberryError
from .events import CallStarted, RunFinished, RunStarted, TextDelta, TextReset
from .results import Call, CallKind, Message, Mode, Run, Usage, call_title

# C0 controls other than tab, newline and carriage return, plus DEL: never typed on purpose.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    return question


def to_messages(pairs: Sequence[tuple[str, str]]) -> list[Message]:
    """Turn (role, content) pairs from `prompts` into messages."""
    return [Message(role=role, content=content) for role, content in pairs]  # type: ignore[arg-type]


class RunContext:
    """One run in progress: the client it calls and the `Run` it fills in."""

    def __init__(self, client: ChatClient, settings: Settings, run: Run) -> None:
        self.client = client
        self.settings = settings
        self.run = run
        self.reply: Completion | None = None

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
    ) -> AsyncIterator[CallStarted | TextDelta | TextReset]:
        """Make one call and yield its events; afterwards `self.reply` holds its `Completion`.

        `schema` asks for a JSON reply of that shape, `max_tokens` bounds this call's reply
        below the run's budget.
        """
        record = Call(kind=kind, index=index, messages=messages)
        self.reply = None
        self.run.calls.append(record)
        if announce:
            yield CallStarted(kind=kind, index=index)
        started = time.perf_counter()
        # Pieces are joined once, not appended to the record per delta, which would copy the
        # whole reply again for every token of a long one.
        parts: list[str] = []
        # Only what is set is passed on, so a chat client of one's own written before these
        # options existed still takes the calls that do not use them.
        options: dict[str, object] = {"json_mode": json_mode}
        if schema is not None:
            options["schema"] = schema
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        try:
            async for item in self.client.stream(messages, **options):  # type: ignore[arg-type]
                if isinstance(item, Delta):
                    parts.append(item.text)
                    yield TextDelta(kind=kind, index=index, text=item.text)
                elif isinstance(item, Restart):
                    parts.clear()
                    record.attempts += 1
                    yield TextReset(kind=kind, index=index, reason=item.reason)
                else:
                    parts = [item.text]
                    record.reply = item.text
                    record.finish_reason = item.finish_reason
                    record.usage = item.usage
                    record.attempts = item.attempts
                    record.seconds = item.seconds
                    record.response_format = item.response_format
                    record.queued_seconds = item.queued
                    if item.model and self.run.served_model is None:
                        self.run.served_model = item.model
                    self.reply = item
        except BaseException as error:
            record.reply = "".join(parts)  # a failed or cancelled call keeps its partial text
            record.seconds = time.perf_counter() - started
            record.error = (
                str(error) if isinstance(error, LlamaberryError) else type(error).__name__
            )
            raise


ModeBody = Callable[[RunContext], AsyncIterator]


async def drive(
    client: ChatClient,
    settings: Settings,
    mode: Mode,
    question: str,
    body: ModeBody,
    on_finish: Callable[[Run], None] | None = None,
) -> AsyncIterator:
    """Run `body` as a mode: wrap its events in RunStarted/RunFinished and settle the run.

    A failure ends the stream with a failed run (and its error line) rather than an exception,
    so every consumer sees what finished. Cancellation is recorded and then propagates.
    """
    run = Run(
        mode=mode,
        model=client.model,
        provider=client.provider,
        question=question,
        settings=settings.public(),
    )
    started = time.perf_counter()

    def settle(status: str, error: str | None = None, kind: str | None = None) -> None:
        run.status = status  # type: ignore[assignment]
        run.error = error
        run.error_kind = kind
        run.seconds = time.perf_counter() - started
        run.usage = Usage.total([c.usage for c in run.calls])
        run.queued_seconds = sum(c.queued_seconds or 0.0 for c in run.calls)
        if on_finish is not None:
            on_finish(run)

    yield RunStarted(run_id=run.id, mode=mode, model=run.model, question=question)
    # A first run in a fresh process may wait for the SDK's import; that is not its time.
    await client.ready()
    started = time.perf_counter()
    try:
        async for event in body(RunContext(client, settings, run)):
            yield event
    except LlamaberryError as error:
        failed = next((c for c in reversed(run.calls) if c.error), None)
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
    yield RunFinished(run=run)
