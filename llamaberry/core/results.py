"""The typed results every mode produces: usage, turns, steps, the synthesis, and the run.

One schema serves `--json`, the history store and the UI, so these models are the contract
between the engine and everything that consumes it. A `Run` holds what every run has; its
`result` is the mode's own result type (declared in the mode's module, see `modes.py`), tagged
by `mode`.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    field_validator,
    model_validator,
)

# A mode's name, as registered in `modes.py`; which names exist is the registry's business.
Mode = str
# "interrupted": saved while running by a process that is gone (killed, or the power went).
Status = Literal["running", "ok", "failed", "cancelled", "interrupted"]
# What a call is for: "turn", "synthesis", "step", "answer", "sample", "draft"... A mode may
# name its own kinds; consumers show them through `call_title`.
CallKind = str
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
    # The mode closed the stream before the reply ended (a limit of its own, such as a
    # step budget); `reply` is what had come, `usage` an estimate.
    closed_early: bool = False


class ReasoningStep(BaseModel):
    """A numbered step of markdown reasoning with its explanation."""

    number: int
    text: str
    explanation: str | None = None


class CallResult(BaseModel):
    """What every parsed call result has: its text, what it cost, and whether it was cut off."""

    content: str = ""
    truncated: bool = False
    # Which limit cut the reply off, when one did; and whether the loop guard stopped it.
    cut_off_by: CutOffBy | None = None
    looped: bool = False
    # What the model thought before this reply (as its endpoint sent it); never part
    # of the content or the answer, and never sent back to the model.
    thinking: str = ""
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0

    def heading(self) -> str:
        """How this result is titled in a run's Markdown."""
        return type(self).__name__

    def badge(self) -> str:
        """A few words shown beside the result's title (a self-scored reward), or ''."""
        return ""

    def remark(self) -> str:
        """A line shown under the result's content (a reflection on it), or ''."""
        return ""


class Turn(CallResult):
    """One reasoning turn of the refine mode (or the single reply of the single mode)."""

    index: int
    content: str
    answer: str
    reasoning: list[ReasoningStep] = Field(default_factory=list)
    critique: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    structured: bool = False

    def heading(self) -> str:
        """'Turn 2'."""
        return f"Turn {self.index}"


class Synthesis(CallResult):
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

    def heading(self) -> str:
        """'Synthesis'."""
        return "Synthesis"


class Step(CallResult):
    """One validated JSON reasoning step of the steps mode."""

    index: int
    title: str
    content: str
    next_action: Literal["continue", "final_answer"]
    attempts: int = 1
    # How the accepted reply was asked for: "json_schema" (the step's own schema) or
    # "json_object" (any JSON, where the endpoint refuses a schema).
    response_format: str | None = None
    # True when the accepted reply was not valid as sent (broken JSON mended, or a missing
    # next_action taken as "continue").
    repaired: bool = False

    def heading(self) -> str:
        """'Step 3: Check the units'."""
        return f"Step {self.index}: {self.title}"


class FinalAnswer(CallResult):
    """The plain-text answer that closes a steps run."""

    content: str

    def heading(self) -> str:
        """'Final answer'."""
        return "Final answer"


class ModeResult(BaseModel):
    """A mode's own part of a run; each mode subclasses it with `mode: Literal["its name"]`.

    Subclasses register themselves by that name, so a stored or `--json` run is read back
    into the right type (the `mode` key is the tag).
    """

    mode: str

    # What `confidence()` means for this mode, in a few plain words for eval's report
    # ("its agreement, the winner's share of the readable samples"); empty when it has none.
    confidence_means: ClassVar[str] = ""

    _types: ClassVar[dict[str, type[ModeResult]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["mode"].default
        if isinstance(name, str):
            ModeResult._types[name] = cls

    @classmethod
    def type_for(cls, mode: str) -> type[ModeResult]:
        """The result type registered for `mode` (a catch-all for a mode this version lacks)."""
        if mode not in ModeResult._types:
            # Loading the registry imports every mode's module, which registers its result.
            # By name, not by an import statement: the registry's modules import this one.
            importlib.import_module("llamaberry.modes")
        return ModeResult._types.get(mode, UnknownResult)

    def side_by_side(self) -> list[tuple[str, str]]:
        """The answers this result drew independently and at once (vote's samples, drafts'
        drafts), each named for a reader ("sample 2"), so eval can score every one. Empty for
        a mode whose answers come one after another."""
        return []

    def confidence(self) -> float | None:
        """How sure the mode is of its own answer, from 0 to 1, where it says (vote: its
        agreement), so eval can check that confidence against correctness."""
        return None

    def sections(self) -> list[CallResult]:
        """The parsed calls worth showing in a run's Markdown, in order."""
        found: list[CallResult] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = value if isinstance(value, list) else [value]
            found += [item for item in items if isinstance(item, CallResult)]
        return found


class UnknownResult(ModeResult):
    """The result of a mode this version does not know (a newer version saved it): kept as is."""

    model_config = ConfigDict(extra="allow")


# Where the first schema kept each mode's results, flat on the run.
_LEGACY_KEYS = ("turns", "synthesis", "steps", "final")


class Run(BaseModel):
    """A whole run of one mode on one question: what finished, what it cost, how it ended.

    `result` is the mode's own result (`RefineResult`, `StepsResult`...). `turns`, `synthesis`,
    `steps` and `final` read (and write) it for the modes that have them.
    """

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
    result: SerializeAsAny[ModeResult]
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

    @model_validator(mode="before")
    @classmethod
    def _nest_result(cls, data: Any) -> Any:
        # Runs saved before results were per mode (and callers that still pass `turns=` and
        # friends) keep those fields flat: they move into the mode's result.
        if isinstance(data, dict):
            data = dict(data)
            result = data.get("result")
            if result is None:
                result = {key: data.pop(key) for key in _LEGACY_KEYS if key in data}
            if isinstance(result, dict) and "mode" not in result:
                result = {"mode": data.get("mode"), **result}
            data["result"] = result
        return data

    @field_validator("result", mode="before")
    @classmethod
    def _typed_result(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return ModeResult.type_for(str(value.get("mode"))).model_validate(value)
        return value

    @property
    def exception(self) -> BaseException | None:
        """The typed error that stopped the run (kept in this process only, never saved)."""
        return self._exception

    @property
    def ok(self) -> bool:
        """True when the run finished without error."""
        return self.status == "ok"

    @property
    def turns(self) -> list[Turn]:
        """The reasoning turns, for modes that have them (else empty)."""
        return getattr(self.result, "turns", [])

    @turns.setter
    def turns(self, value: list[Turn]) -> None:
        self.result.turns = value  # type: ignore[attr-defined]

    @property
    def synthesis(self) -> Synthesis | None:
        """The synthesis call's result, for modes that end in one."""
        return getattr(self.result, "synthesis", None)

    @synthesis.setter
    def synthesis(self, value: Synthesis | None) -> None:
        self.result.synthesis = value  # type: ignore[attr-defined]

    @property
    def steps(self) -> list[Step]:
        """The validated JSON steps, for modes that have them (else empty)."""
        return getattr(self.result, "steps", [])

    @steps.setter
    def steps(self, value: list[Step]) -> None:
        self.result.steps = value  # type: ignore[attr-defined]

    @property
    def final(self) -> FinalAnswer | None:
        """The closing plain-text answer call, for modes that have one."""
        return getattr(self.result, "final", None)

    @final.setter
    def final(self, value: FinalAnswer | None) -> None:
        self.result.final = value  # type: ignore[attr-defined]

    def public_dict(self) -> dict[str, object]:
        """The run as `--json` shows it: everything but the raw call log."""
        return self.model_dump(mode="json", exclude={"calls"})
