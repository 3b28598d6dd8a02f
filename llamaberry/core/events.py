"""The events a run emits, in order. The CLI, the UI, the store and `await engine.refine()` all
consume this one stream.

A run is: `RunStarted`, then for each model call `CallStarted`, any number of `TextDelta`
(and `TextReset` when a dropped stream is retried and its partial text must be thrown away),
`CallNote` when the call was condensed, given a smaller budget or stopped in a loop,
`CallFinished` with the parsed result, and last `RunFinished` with the whole `Run`, whatever
its status.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SerializeAsAny

from llamaberry.core.results import CallKind, CallResult, Mode, Run

# What a `CallNote` is about.
NoteKind = Literal["condensed", "budget", "looped", "stopped", "fallback"]


class RunStarted(BaseModel):
    """A run has begun."""

    type: Literal["run_started"] = "run_started"
    run_id: str
    mode: Mode
    model: str
    question: str


class CallStarted(BaseModel):
    """A model call (a turn, the synthesis, a step or an answer) has begun."""

    type: Literal["call_started"] = "call_started"
    kind: CallKind
    index: int
    # The run's final call (its reply is the answer as the client asked for it).
    final: bool = False


class TextDelta(BaseModel):
    """Visible text streamed by the current call."""

    type: Literal["text_delta"] = "text_delta"
    kind: CallKind
    index: int
    text: str


class ThinkingDelta(BaseModel):
    """A piece of the model's own thinking for the current call, apart from its reply: show it
    set apart (dimmed, folded), never as the answer."""

    type: Literal["thinking_delta"] = "thinking_delta"
    kind: CallKind
    index: int
    text: str


class TextReset(BaseModel):
    """The call's stream was retried: discard the text (and thinking) streamed for it so far."""

    type: Literal["text_reset"] = "text_reset"
    kind: CallKind
    index: int
    reason: str


class CallNote(BaseModel):
    """Something the engine did to the current call that a reader should know about.

    `note` is "condensed" (earlier turns were shortened to fit the context window), "budget"
    (the completion budget was lowered to fit it), "looped" (the reply kept repeating
    itself and was stopped), "stopped" (a limit of the mode's own, such as a step
    budget, ended it) or "fallback" (the answer was not where it was asked for and was taken
    from elsewhere, as the line says); `message` says it in a line.
    """

    type: Literal["call_note"] = "call_note"
    kind: CallKind
    index: int
    note: NoteKind
    message: str


class CallFinished(BaseModel):
    """A model call finished and its reply was parsed: a `Turn`, `Synthesis`, `Step`,
    `FinalAnswer` or a newer mode's own `CallResult`."""

    type: Literal["call_finished"] = "call_finished"
    kind: CallKind
    index: int
    result: SerializeAsAny[CallResult]


class RunFinished(BaseModel):
    """The run ended: `run.status` says whether it succeeded, failed or was cancelled."""

    type: Literal["run_finished"] = "run_finished"
    run: Run


Event = Annotated[
    RunStarted
    | CallStarted
    | TextDelta
    | ThinkingDelta
    | TextReset
    | CallNote
    | CallFinished
    | RunFinished,
    Field(discriminator="type"),
]
