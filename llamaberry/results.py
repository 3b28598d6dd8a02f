"""The typed results every mode produces: usage, turns, steps, the synthesis, and the run.

One schema serves `--json`, the history store and the UI, so these models are the contract
between the engine and everything that consumes it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

Mode = Literal["single", "refine", "steps"]
Status = Literal["running", "ok", "failed", "cancelled"]
CallKind = Literal["turn", "synthesis", "step", "answer"]
# Which limit stopped a reply early: the completion-token budget (--max-tokens), the model's
# context window, or a limit of the server's own it did not name.
CutOffBy = Literal["max_tokens", "context", "server"]


def call_title(kind: str, index: int) -> str:
    """How a person names a call: 'Turn 2', 'Synthesis', 'Step 4', 'Answer'."""
    if kind in ("synthesis", "answer"):
        return kind.capitalize()
    return f"{kind.capitalize()} {index}"


def cut_off_line(limit: str | None) -> str:
    """Which limit cut a reply off, in words."""
    if limit == "context":
        return "cut off by the model's context window"
    if limit == "server":
        return "cut off by the server before the token budget (its context window, most likely)"
    return "cut off by the token budget, --max-tokens"


class Usage(BaseModel):
    """Token counts for one call, or summed over several."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Of the completion tokens, those the model spent thinking, where the endpoint says.
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    @classmethod
    def total(cls, usages: list[Usage]) -> Usage:
        """Sum a list of usages."""
        return sum(usages, cls())


class Message(BaseModel):
    """One chat message as sent to the provider."""

    role: Literal["system", "user", "assistant"]
    content: str


class Call(BaseModel):
    """One model call as it happened: what was sent, what came back, and what it cost."""

    kind: CallKind
    index: int
    messages: list[Message]
    reply: str = ""
    # The model's own thinking, kept apart from `reply` and never sent back to it.
    thinking: str = ""
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    # Of `seconds`, the time the reply waited in the server's queue (where the server says).
    queued_seconds: float | None = None
    attempts: int = 1
    error: str | None = None
    # "json_schema" or "json_object" when the reply was asked to be JSON.
    response_format: str | None = None
    # The completion budget sent, when it was lowered to fit the context window.
    max_tokens: int | None = None
    # Earlier turns went out condensed to fit the context window.
    condensed: bool = False
    # The loop guard stopped the reply; `reply` keeps the text up to the loop.
    looped: bool = False
    cut_off_by: CutOffBy | None = None


class ReasoningStep(BaseModel):
    """A numbered step of markdown reasoning with its explanation."""

    number: int
    text: str
    explanation: str | None = None


class Turn(BaseModel):
    """One reasoning turn of the refine mode (or the single reply of the single mode)."""

    index: int
    content: str
    answer: str
    reasoning: list[ReasoningStep] = Field(default_factory=list)
    critique: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    structured: bool = False
    truncated: bool = False
    cut_off_by: CutOffBy | None = None
    looped: bool = False
    # What the model thought before this reply (as its endpoint sent it); never part
    # of the content or the answer, and never sent back to the model.
    thinking: str = ""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0


class Synthesis(BaseModel):
    """The final call of the refine mode that merges every turn into one answer."""

    content: str
    answer: str
    analysis: str | None = None
    comparison: str | None = None
    reasoning: list[ReasoningStep] = Field(default_factory=list)
    comprehensive_answer: str | None = None
    concise_answer: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    structured: bool = False
    truncated: bool = False
    cut_off_by: CutOffBy | None = None
    looped: bool = False
    # What the model thought before this reply (as its endpoint sent it); never part
    # of the content or the answer, and never sent back to the model.
    thinking: str = ""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0


class Step(BaseModel):
    """One validated JSON reasoning step of the steps mode."""

    index: int
    title: str
    content: str
    next_action: Literal["continue", "final_answer"]
    looped: bool = False
    # What the model thought before this reply (as its endpoint sent it); never part
    # of the content or the answer, and never sent back to the model.
    thinking: str = ""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    attempts: int = 1
    # How the accepted reply was asked for: "json_schema" (the step's own schema) or
    # "json_object" (any JSON, where the endpoint refuses a schema).
    response_format: str | None = None
    # True when the accepted reply was not valid as sent (broken JSON mended, or a missing
    # next_action taken as "continue").
    repaired: bool = False


class FinalAnswer(BaseModel):
    """The plain-text answer that closes a steps run."""

    content: str
    truncated: bool = False
    cut_off_by: CutOffBy | None = None
    looped: bool = False
    # What the model thought before this reply (as its endpoint sent it); never part
    # of the content or the answer, and never sent back to the model.
    thinking: str = ""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0


class Run(BaseModel):
    """A whole run of one mode on one question: what finished, what it cost, how it ended."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    mode: Mode
    model: str
    # The model the server said answered, when it named one: a single-model server (llama.cpp)
    # answers any asked id with its own model.
    served_model: str | None = None
    provider: str
    question: str
    settings: dict[str, object] = Field(default_factory=dict)
    status: Status = "running"
    error: str | None = None
    # The error's kind ("context_too_long", "rate_limit", "auth"...; see `errors`), so code
    # can tell failures apart without parsing the line.
    error_kind: str | None = None
    answer: str | None = None
    # True when `answer` is the best a failed run had (a refine run's last good turn), not
    # what a finished run would have given.
    partial: bool = False
    turns: list[Turn] = Field(default_factory=list)
    synthesis: Synthesis | None = None
    steps: list[Step] = Field(default_factory=list)
    final: FinalAnswer | None = None
    calls: list[Call] = Field(default_factory=list)
    # The model's context window when it was known, and what was done to fit it or to stop
    # a looping reply, one line each, as the terminal showed them.
    context_window: int | None = None
    notes: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    # Of `seconds`, the time its calls waited in the server's queue for a free slot (summed;
    # known where the server reports its own timings, as llama.cpp does).
    queued_seconds: float = 0.0
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    # The typed error that stopped the run, in this process only (never serialized).
    _exception: BaseException | None = PrivateAttr(default=None)

    @property
    def exception(self) -> BaseException | None:
        """The typed error that stopped the run (kept in this process only, never saved)."""
        return self._exception

    @property
    def ok(self) -> bool:
        """True when the run finished without error."""
        return self.status == "ok"

    def public_dict(self) -> dict[str, object]:
        """The run as `--json` shows it: everything but the raw call log."""
        return self.model_dump(mode="json", exclude={"calls"})
