"""The typed results every mode produces: usage, turns, steps, the synthesis, and the run.

One schema serves `--json`, the history store and the UI, so these models are the contract
between the engine and everything that consumes it. A `Run` holds what every run has and
nothing of any one mode; its `result` is the mode's own result type, tagged by `mode`, which
says what the mode's calls were (`call_results`, each call with its `kind` and `index`) and
what answers the run held on the way (`stages`).

Every mode's result type is declared here, with the schema it is part of, rather than in the
mode's module: reading a saved or `--json` run back needs only this module, never the code that
runs the modes (which sits layers above it). A mode defined outside llamaberry registers its
own result type by subclassing `ModeResult`.
"""

from __future__ import annotations

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
# name its own kinds; consumers show them through `call_title`. Each parsed result says its
# own (`CallResult.kind`).
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
    # Of the prompt tokens, those the server read from its prompt cache instead of evaluating
    # (a prefix an earlier request had sent), where the server says.
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
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
    # The run's final call: the one a client's response_format, tools and stop went with.
    final: bool = False
    # The tools the model called, in the chat-completions shape (id, type, function).
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    # The token log-probabilities the server sent when asked; not kept in the history.
    logprobs: list[dict[str, Any]] | None = Field(default=None, exclude=True)


class ReasoningStep(BaseModel):
    """A numbered step of markdown reasoning with its explanation."""

    number: int
    text: str
    explanation: str | None = None


class CallResult(BaseModel):
    """What every parsed call result has: its text, what it cost, and whether it was cut off.

    It says which call of its run it is: `kind` (the same kind its events carry) and `index`
    (its number among the calls of that kind, 1 for a kind a run makes once).
    """

    # A subclass names its own kind; the same class under another kind is a subclass of it.
    kind: ClassVar[CallKind] = "call"

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
    # Saved only by the kinds a run makes more than once (they declare `index: int`): a
    # synthesis or a final answer is always 1, and its saved form has no index.
    index: int = Field(default=1, exclude=True)

    def heading(self) -> str:
        """How this result is titled in a run's Markdown: 'Turn 2', 'Synthesis'."""
        return call_title(self.kind, self.index)

    def badge(self) -> str:
        """A few words shown beside the result's title (a self-scored reward), or ''."""
        return ""

    def remark(self) -> str:
        """A line shown under the result's content (a reflection on it), or ''."""
        return ""


class Turn(CallResult):
    """One reasoning turn of the refine mode."""

    kind: ClassVar[CallKind] = "turn"

    index: int
    content: str
    answer: str
    reasoning: list[ReasoningStep] = Field(default_factory=list)
    critique: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    structured: bool = False


class Synthesis(CallResult):
    """The final call of the refine mode that merges every turn into one answer (and of the
    drafts mode, over its drafts)."""

    kind: ClassVar[CallKind] = "synthesis"

    content: str
    answer: str
    analysis: str | None = None
    comparison: str | None = None
    reasoning: list[ReasoningStep] = Field(default_factory=list)
    comprehensive_answer: str | None = None
    concise_answer: str | None = None
    sections: dict[str, str] = Field(default_factory=dict)
    structured: bool = False


class Step(CallResult):
    """One validated JSON reasoning step of the steps mode."""

    kind: ClassVar[CallKind] = "step"

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

    kind: ClassVar[CallKind] = "answer"

    content: str

    def heading(self) -> str:
        """'Final answer'."""
        return "Final answer"


class ModeResult(BaseModel):
    """A mode's own part of a run; each mode subclasses it with `mode: Literal["its name"]`.

    Subclasses register themselves by that name, so a stored or `--json` run is read back
    into the right type (the `mode` key is the tag). Its fields hold the mode's parsed calls
    (`CallResult`s, alone or in lists) in the order the mode makes them, and whatever else
    the mode works out (vote's tally).
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
        return ModeResult._types.get(mode, UnknownResult)

    def _calls_by_field(self) -> list[list[CallResult]]:
        """The parsed calls each field holds, field by field in declared order."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = value if isinstance(value, list) else [value]
            found.append([item for item in items if isinstance(item, CallResult)])
        return found

    def call_results(self) -> list[CallResult]:
        """Every parsed call of the run, each with its `kind` and `index`: field by field in
        declared order, and the calls one field holds by number (calls made at once finish,
        and are kept, in any order)."""
        return [
            item
            for items in self._calls_by_field()
            for item in sorted(items, key=lambda item: item.index)
        ]

    def sections(self) -> list[CallResult]:
        """The parsed calls worth showing in a run's Markdown, in the order they were kept."""
        return [item for items in self._calls_by_field() for item in items]

    def stages(self, answer: str | None) -> list[tuple[str, str]]:
        """Every answer the run held on its way, in order, named by stage ("turn 2",
        "synthesis"), so eval can score each at no extra call; by default only the run's
        own `answer`, as "answer"."""
        return [("answer", answer)] if answer is not None else []

    def partial_source(self, answer: str) -> str | None:
        """Which call a failed run's partial `answer` was taken from ("turn 4"), where the
        mode can tell; None otherwise."""
        return None

    def side_by_side(self) -> list[tuple[str, str]]:
        """The answers this result drew independently and at once (vote's samples, drafts'
        drafts), each named for a reader ("sample 2"), so eval can score every one. Empty for
        a mode whose answers come one after another."""
        return []

    def confidence(self) -> float | None:
        """How sure the mode is of its own answer, from 0 to 1, where it says (vote: its
        agreement), so eval can check that confidence against correctness."""
        return None


class UnknownResult(ModeResult):
    """The result of a mode this version does not know (a newer version saved it): kept as is."""

    model_config = ConfigDict(extra="allow")


# -- each mode's own result ----------------------------------------------------------------------


class SingleReply(Turn):
    """The single mode's one reply, kept as a turn so it reads like refine's first; as a call
    it is the run's answer."""

    kind: ClassVar[CallKind] = "answer"


class SingleResult(ModeResult):
    """The one reply, kept as turn 1 so it reads like refine's first turn."""

    mode: Literal["single"] = "single"
    turns: list[SingleReply] = Field(default_factory=list)

    def sections(self) -> list[CallResult]:
        """Nothing beyond the answer: the reply is the answer."""
        return []


class RefineResult(ModeResult):
    """Every turn, then the synthesis that merged them."""

    mode: Literal["refine"] = "refine"
    turns: list[Turn] = Field(default_factory=list)
    synthesis: Synthesis | None = None

    def stages(self, answer: str | None) -> list[tuple[str, str]]:
        """Each turn's answer, then the synthesis's (a run of one turn and no synthesis has
        only its answer)."""
        if len(self.turns) < 2 and self.synthesis is None:
            return super().stages(answer)
        found = [(f"turn {turn.index}", turn.answer) for turn in self.turns]
        if self.synthesis is not None:
            found.append(("synthesis", self.synthesis.answer))
        return found

    def partial_source(self, answer: str) -> str | None:
        """The last turn whose answer it is."""
        turn = next((t for t in reversed(self.turns) if t.answer == answer), None)
        return f"turn {turn.index}" if turn else None


class StepsResult(ModeResult):
    """The validated steps, then the plain-text final answer."""

    mode: Literal["steps"] = "steps"
    steps: list[Step] = Field(default_factory=list)
    final: FinalAnswer | None = None

    def stages(self, answer: str | None) -> list[tuple[str, str]]:
        """The answer after the steps, as "final"."""
        if answer is None or not self.steps:
            return super().stages(answer)
        return [("final", answer)]


class Sample(CallResult):
    """One independent answer of the vote mode: its text, the answer read from it and what it
    cost."""

    kind: ClassVar[CallKind] = "sample"

    index: int
    # The answer as the sample wrote it, and the normalised form votes are counted by
    # (None when no answer could be read).
    answer: str | None = None
    key: str | None = None
    # 1 for the sample that finished first, 2 for the next...
    finished: int = 0

    def heading(self) -> str:
        """'Sample 3: 42'."""
        return f"Sample {self.index}: {self.answer if self.answer is not None else '(no answer)'}"


class VoteResult(ModeResult):
    """Every sample (in the order they finished), the votes per answer and the agreement."""

    mode: Literal["vote"] = "vote"
    samples: list[Sample] = Field(default_factory=list)
    # Answer (as first written) -> how many samples gave it, most votes first.
    votes: dict[str, int] = Field(default_factory=dict)
    winner: str | None = None
    # The winner's count over the samples with a readable answer (None when none had one).
    agreement: float | None = None

    def side_by_side(self) -> list[tuple[str, str]]:
        """Each sample's answer as the vote read it, by sample number ("" when it gave none)."""
        ordered = sorted(self.samples, key=lambda s: s.index)
        return [(f"sample {s.index}", s.answer or "") for s in ordered]

    confidence_means: ClassVar[str] = (
        "its agreement, the winning answer's share of the samples that gave a readable answer"
    )

    def confidence(self) -> float | None:
        """The agreement: the winner's share of the samples with a readable answer."""
        return self.agreement


class Draft(CallResult):
    """One independent draft of the drafts mode, as written."""

    kind: ClassVar[CallKind] = "draft"

    index: int


class DraftsResult(ModeResult):
    """Every draft (by number), then the synthesis that merged them."""

    mode: Literal["drafts"] = "drafts"
    drafts: list[Draft] = Field(default_factory=list)
    synthesis: Synthesis | None = None

    def side_by_side(self) -> list[tuple[str, str]]:
        """Each draft, by number; a scorer reads the answer its end states."""
        return [(f"draft {d.index}", d.content) for d in self.drafts]

    def stages(self, answer: str | None) -> list[tuple[str, str]]:
        """The synthesis's answer (the drafts are scored side by side)."""
        if self.synthesis is None:
            return super().stages(answer)
        return [("synthesis", self.synthesis.answer)]


# What a reflect reward tells the model to do (see `modes.reflect.verdict`).
Verdict = Literal["go on", "adjust", "go back"]
# Where a reflect run's answer came from: the <answer> tag, else (when the model wrote none)
# the text after its last step, else its last step.
AnswerFrom = Literal["answer", "trailing text", "last step"]


class Reflected(CallResult):
    """A part of a reflect chain with the reflection and the reward the model wrote after it."""

    content: str = ""
    reflection: str | None = None
    # 0.0 to 1.0; None when the model gave none (or wrote no number).
    reward: float | None = None
    # The reward as the model wrote it ("0.7", "7/10", "Reward: 1.4").
    reward_written: str | None = None
    # It was outside 0.0 to 1.0 and was clamped into that range.
    reward_clamped: bool = False
    verdict: Verdict | None = None

    def badge(self) -> str:
        """'reward 0.70 · adjust', or ''."""
        if self.reward is None:
            return f"reward unreadable ({self.reward_written!r})" if self.reward_written else ""
        clamped = f" (written {self.reward_written!r}, clamped)" if self.reward_clamped else ""
        return f"reward {self.reward:.2f} · {self.verdict}{clamped}"

    def remark(self) -> str:
        """The reflection, if one was written."""
        return self.reflection or ""

    def heading(self) -> str:
        """'Step 3 · reward 0.90 · go on', 'Answer · reward 0.90 · go on'."""
        badge = self.badge()
        return super().heading() + (f" · {badge}" if badge else "")


class ReflectStep(Reflected):
    """One step of the chain; `reflection` and `reward` are set on the steps followed by one."""

    kind: ClassVar[CallKind] = "step"

    index: int


class ReflectAnswer(Reflected):
    """The chain's <answer>, with its final reflection and reward."""

    kind: ClassVar[CallKind] = "answer"


class ReflectResult(ModeResult):
    """The steps (each with any reflection and reward after it), the answer, every reply as
    it came, and whether the step budget stopped the chain."""

    mode: Literal["reflect"] = "reflect"
    steps: list[ReflectStep] = Field(default_factory=list)
    # The <answer> part, when the model wrote one.
    final: ReflectAnswer | None = None
    answer_from: AnswerFrom | None = None
    # The chain went past its step budget and its stream was closed there.
    budget_stopped: bool = False
    # Each call's reply exactly as it came (the chain, then the closing call if there was one).
    raw: list[str] = Field(default_factory=list)

    confidence_means: ClassVar[str] = "the reward the model gave its own answer"

    def confidence(self) -> float | None:
        """The model's own last reward on its answer (None when it gave none, or no <answer>),
        so eval can check the self-scored reward against correctness."""
        return self.final.reward if self.final is not None else None

    def stages(self, answer: str | None) -> list[tuple[str, str]]:
        """The answer after the steps, as "final"."""
        if answer is None or not self.steps:
            return super().stages(answer)
        return [("final", answer)]


class Run(BaseModel):
    """A whole run of one mode on one question: what finished, what it cost, how it ended.

    `result` is the mode's own result (`RefineResult`, `StepsResult`...): its turns, steps,
    synthesis, samples... A run knows nothing of any one mode.
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
    # The mode's prompt version (`modes.prompt_version`): a fingerprint of the prompts its
    # calls were told. None on runs saved before it was recorded. An eval reuses a saved run
    # only when this matches the mode's version now.
    prompt_version: str | None = None
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
    # What the run cost in dollars, from a maintained price table (`core.prices`), priced when
    # it ended; None when its price is unknown, and always for the local provider.
    cost: float | None = None
    # For a run through a Batch API (`"batch": true` in its settings) whose cost is known:
    # True when that cost is at list price, since the table had no Batch API rate for its
    # model (the provider billed less), False when at the Batch API's rates. None for other
    # runs, and for batch runs saved before it was recorded (`core.prices` works it out).
    list_price: bool | None = None
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
        # Runs saved before results were per mode (and callers that pass `turns=` and the
        # like) keep the mode's fields flat beside the run's: whatever is not a run's field
        # moves into the mode's result.
        if isinstance(data, dict):
            data = dict(data)
            result = data.get("result")
            if result is None:
                result = {key: data.pop(key) for key in list(data) if key not in cls.model_fields}
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

    def public_dict(self) -> dict[str, object]:
        """The run as `--json` shows it: everything but the raw call log."""
        return self.model_dump(mode="json", exclude={"calls"})
