"""The steps mode (after g1): the model reasons as a chain of validated JSON steps, each one
appended to the conversation, then gives its final answer in one plain-text call.

Each step is asked for with `_StepReply`'s own JSON schema (`response_format` json_schema,
strict), so a server that constrains decoding cannot answer anything else; an endpoint that
refuses a schema is asked for any JSON object instead (the client remembers the refusal).

Every reply is then checked against `_StepReply`. What can be mended is mended first: broken
JSON (cut off, a trailing comma, single quotes) by `json_repair`, and a step with a title and
content but no `next_action` goes on as "continue". A reply that still is not a valid step is
answered with the problem and asked for again, a bounded number of times, each time with
something changed that can change the outcome (a reply cut off by its budget gets a larger
budget and a reminder to be brief; an identical reply is not asked for again); then the run
fails with one readable line and keeps the steps that were valid. Each re-ask is announced with
a `TextReset`, so a terminal or page shows it as it happens.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import json_repair
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llamaberry.core.errors import InvalidReplyError, JSONValidationError
from llamaberry.core.events import (
    CallFinished,
    CallNote,
    CallStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.core.json_reply import JSONSchema
from llamaberry.core.options import Options
from llamaberry.core.results import FinalAnswer, Message, Step, StepsResult, Usage, cut_off_line
from llamaberry.modes import prompts
from llamaberry.run.loops import find_loop
from llamaberry.run.runner import ModeSpec, RunContext, to_messages

# A step may be asked for again this many times after its first reply (three tries in all).
RETRIES_PER_STEP = 2

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
# The model's rejected reply is shown back to it, but a runaway one is not worth resending whole.
_MAX_ECHO = 2000
# The longest title and content a grammar-bound server (llama.cpp) lets the model write: the
# content is "a paragraph or two", about 100 words. A smaller step budget lowers both, so that a
# whole step fits it even at one character a token (see `JSONSchema.response_format`).
TITLE_LIMIT = 120
CONTENT_LIMIT = 600


class _StepReply(BaseModel):
    """What a step reply must contain; extra keys are ignored, never forwarded."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, strict=True)

    # The maxLengths are for grammar-bound servers only (they are not validated here): they make
    # the model close a field that runs away instead of writing until the budget cuts the JSON
    # off ("8888..." titles, counting loops and drift in content, seen on the tiny model).
    title: str = Field(min_length=1, json_schema_extra={"maxLength": TITLE_LIMIT})
    content: str = Field(min_length=1, json_schema_extra={"maxLength": CONTENT_LIMIT})
    next_action: Literal["continue", "final_answer"]

    @field_validator("next_action", mode="before")
    @classmethod
    def _tolerate_spelling(cls, value: object) -> object:
        # "Final Answer" or "final-answer" mean what they say; anything else stays an error.
        if isinstance(value, str):
            return re.sub(r"[\s-]+", "_", value.strip().lower())
        return value


# Built from the same model that validates a step, so the two cannot drift apart.
STEP_SCHEMA = JSONSchema.of(_StepReply, "step")


class _NotAStep(Exception):
    """Internal: a reply that cannot be used as a step; `str()` says why, for the model too."""


class _Budget:
    """The completion budget of a run's steps: bounded on its own, grown when cut off."""

    def __init__(self, first: int, ceiling: int) -> None:
        self.ceiling = ceiling
        self.tokens = min(first, ceiling)

    def grow(self) -> bool:
        """Double the budget (up to the ceiling); False when it cannot grow."""
        if self.tokens >= self.ceiling:
            return False
        self.tokens = min(self.tokens * 2, self.ceiling)
        return True


class StepsOptions(Options):
    """The bounds on the chain (at least `min_steps`, at most `max_steps`) and a step's budget."""

    min_steps: int = Field(3, ge=1, le=50, description="Fewest reasoning steps.")
    max_steps: int = Field(25, ge=1, le=100, description="Most reasoning steps.")
    # A step is a paragraph, not an essay: its first ask gets this budget (or max_tokens if
    # smaller); a step cut off by it is asked again with twice as much, up to max_tokens.
    step_max_tokens: int = Field(
        1024, ge=1, le=131072, description="Completion-token budget of a step's first ask."
    )

    @model_validator(mode="after")
    def _ordered(self) -> StepsOptions:
        if self.min_steps > self.max_steps:
            raise ValueError(
                f"min_steps ({self.min_steps}) is larger than max_steps ({self.max_steps})"
            )
        return self


async def steps(ctx: RunContext, options: StepsOptions) -> AsyncIterator:
    """Yield the events of a steps run: between `min_steps` and `max_steps` steps, then the
    final answer."""
    result: StepsResult = ctx.result
    min_steps, max_steps = options.min_steps, options.max_steps
    conversation = to_messages(prompts.steps_messages(ctx.run.question, min_steps, max_steps))
    # Shared by the run's steps: once a step needed more room, the later ones start there.
    budget = _Budget(options.step_max_tokens, ctx.settings.max_tokens)
    for index in range(1, max_steps + 1):
        async for event in _step(ctx, index, conversation, budget):
            yield event
        step = result.steps[-1]
        earlier = _repeated(step, result.steps[:-1])
        if earlier is not None:
            # A loop one step long each time (small models write "continue" steps until the
            # bound): stopped as the loop guard stops one inside a reply. The repeat is kept
            # on the record, marked, but never sent back; the answer comes from the steps
            # before it.
            step.looped = True
            yield ctx.note(
                "step",
                index,
                "looped",
                f"Step {index} repeats step {earlier.index} word for word, so the chain stops "
                "there and the final answer is asked for from the steps before it.",
            )
            conversation.pop()  # the request for this step: roles keep alternating
            break
        # Only the validated fields go back to the model: never extra keys, never reasoning.
        conversation.append(Message(role="assistant", content=_as_json(step)))
        if index == max_steps:
            break
        if step.next_action == "final_answer":
            if index >= min_steps:
                break
            follow_up = prompts.too_early_message(index, min_steps)
        else:
            follow_up = prompts.next_step_message(index + 1)
        # A user turn between steps keeps roles alternating, which some local servers' chat
        # templates insist on, and tells the model which step it is on.
        conversation.append(Message(role="user", content=follow_up))

    # The final call swaps the JSON-only system prompt for one that ends the step phase, and
    # is not in JSON mode: a final answer that comes back as JSON is the failure to avoid.
    final_messages = [
        Message(role="system", content=prompts.STEPS_FINAL_SYSTEM),
        *conversation[1:],
        Message(role="user", content=prompts.STEPS_FINAL),
    ]
    async for event in ctx.call("answer", 1, final_messages, final=True):
        yield event
    reply = ctx.reply
    assert reply is not None
    final = FinalAnswer(**reply.result_fields())
    result.final = final
    answer = _plain_answer(reply.text)
    # A final call that called the caller's tools instead has said all it had to.
    if not answer and not reply.tool_calls:
        why = f" (it was {cut_off_line(reply.cut_off_by)})" if reply.truncated else ""
        _fail(ctx, f"the model gave an empty final answer{why}")
    ctx.run.answer = answer
    yield CallFinished(kind="answer", index=1, result=final)


def _repeated(step: Step, earlier: list[Step]) -> Step | None:
    """The earlier step that `step` says again word for word (case and spacing aside)."""
    said = _said(step.content)
    return next((e for e in earlier if _said(e.content) == said), None)


def _said(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .")


@dataclass
class _Attempt:
    """What one ask for a step brought back, and why it is not usable as sent (the problem is
    '' until one is found)."""

    text: str = ""
    thinking: str = ""
    response_format: str | None = None
    truncated: bool = False
    usage: Usage = field(default_factory=Usage)
    problem: str = ""


@dataclass
class _Retries:
    """What the re-asks of one step have already tried, so that each changes something."""

    # Whether the re-ask already asks for a short step.
    brief: bool = False
    # The last rejected reply, to notice one that repeats.
    previous: str | None = None

    def change(self, attempt: _Attempt, limit: str | None, budget: _Budget) -> str:
        """What asking again changes, in words ('' when nothing can change the reply), with
        the limit that cut `attempt` off added to its problem.

        At temperature 0 the same request brings back the same reply, so a re-ask must
        change something that can change the outcome.
        """
        change = ""
        if attempt.truncated and limit in ("context", "server"):
            # More budget cannot help when the context window is what stopped it.
            attempt.problem += f" (the reply was {cut_off_line(limit)})"
            if not self.brief:
                change = "asking for a shorter step"
            self.brief = True
        elif attempt.truncated:
            attempt.problem += f" (the reply was cut off by its budget of {budget.tokens:,} tokens)"
            if budget.grow():
                change = f"with a budget of {budget.tokens:,} tokens"
            elif not self.brief:
                change = "asking for a shorter step"
            self.brief = True
        elif not attempt.text.strip() or attempt.text.strip() != self.previous:
            change = "with the problem pointed out"
        self.previous = attempt.text.strip()
        return change

    def messages(self, index: int, attempt: _Attempt) -> list[Message]:
        """What a re-ask adds to the conversation: the rejected reply and what was wrong."""
        # Each retry shows only the latest rejected reply: earlier failures are not worth the
        # tokens, and they never reach the conversation later steps are given.
        retry: list[Message] = []
        if attempt.text.strip():
            retry.append(Message(role="assistant", content=attempt.text.strip()[:_MAX_ECHO]))
        problem = prompts.step_retry_message(index, attempt.problem, brief=self.brief)
        retry.append(Message(role="user", content=problem))
        return retry


async def _step(
    ctx: RunContext, index: int, conversation: list[Message], budget: _Budget
) -> AsyncIterator:
    """Ask for step `index` until a reply validates (appending it to the result's steps)."""
    started = time.perf_counter()
    usage = Usage()
    messages = conversation
    tries = RETRIES_PER_STEP + 1
    retries = _Retries()
    attempt = 0
    while True:
        attempt += 1
        got = _Attempt()
        # A retry is the same step, so consumers see one CallStarted per step.
        async for event in _ask(ctx, index, messages, budget, got, announce=attempt == 1):
            yield event
        usage += got.usage
        if got.text.strip():
            try:
                fields, repaired = _parse_step(got.text)
            except _NotAStep as error:
                got.problem = f"{got.problem}: {error}" if got.problem else str(error)
            else:
                step = Step(
                    index=index,
                    **fields.model_dump(),
                    usage=usage,
                    seconds=time.perf_counter() - started,
                    attempts=attempt,
                    response_format=got.response_format,
                    repaired=repaired or bool(got.problem),
                    looped=ctx.run.calls[-1].looped,
                    thinking=got.thinking,
                )
                ctx.result.steps.append(step)
                # One delta carrying the readable content keeps the promise every mode makes:
                # a call's deltas add up to its result's content.
                yield TextDelta(kind="step", index=index, text=step.content)
                yield CallFinished(kind="step", index=index, result=step)
                return
        elif not got.problem:
            got.problem = "it was empty"

        limit = ctx.run.calls[-1].cut_off_by if ctx.run.calls else None
        change = retries.change(got, limit, budget)
        if attempt >= tries or not change:
            break
        yield TextReset(
            kind="step",
            index=index,
            reason=f"step {index} was not usable ({got.problem}); asking again {change} "
            f"(try {attempt + 1} of {tries})",
        )
        messages = [*conversation, *retries.messages(index, got)]
    why = "" if attempt >= tries else " (asking again would not change the reply)"
    _fail(ctx, f"the model's reply was not a valid step after {attempt} tries{why}: {got.problem}")


async def _ask(
    ctx: RunContext,
    index: int,
    messages: list[Message],
    budget: _Budget,
    got: _Attempt,
    *,
    announce: bool,
) -> AsyncIterator:
    """Ask once for step `index`, filling in `got` with what came back."""
    try:
        async for event in ctx.call(
            "step",
            index,
            messages,
            schema=STEP_SCHEMA,
            max_tokens=budget.tokens,
            announce=announce,
        ):
            # JSON replies are not streamed: the client yields the whole JSON text as one
            # delta. Raw JSON is no use to a reader and may not even be a valid step, so
            # it is held back; the validated step's content is sent instead. The model's
            # own thinking is not JSON and goes out as it comes.
            if isinstance(event, CallStarted | TextReset | CallNote | ThinkingDelta):
                yield event
    except JSONValidationError as error:
        # The provider refused the reply, but it says what the model wrote: mend that.
        got.text = error.failed_generation or ""
        got.response_format = error.response_format
        got.problem = "the provider rejected it as invalid JSON (json_validate_failed)"
        # A reply that looped until its budget ran out is cut-off JSON, which a provider
        # refuses; what came before the loop is still a step worth mending and keeping.
        loop = find_loop(got.text) if ctx.settings.loop_guard else None
        if loop is not None:
            got.text = got.text[: loop.kept]
            ctx.run.calls[-1].looped = True
            ctx.run.calls[-1].reply = got.text
            yield ctx.note(
                "step",
                index,
                "looped",
                f"Step {index} kept repeating itself until its budget ran out; its text up "
                "to the loop is kept.",
            )
    else:
        reply = ctx.reply
        assert reply is not None
        got.usage, got.thinking = reply.usage, reply.thinking
        got.text, got.response_format = reply.text, reply.response_format
        got.truncated = reply.truncated


def _fail(ctx: RunContext, line: str) -> None:
    """Raise `InvalidReplyError`, charging it to the last call so the run's error names it."""
    if ctx.run.calls:
        ctx.run.calls[-1].error = line
    raise InvalidReplyError(line)


def _parse_step(text: str) -> tuple[_StepReply, bool]:
    """Validate one step reply, mending what can be mended; the flag says whether it was.

    Raises `_NotAStep` with a reason the model can act on.
    """
    repaired = False
    try:
        data = _load_json(text)
    except _NotAStep as broken:
        data = _repair_json(text)
        if data is None:
            raise
        repaired = True
        try:
            return _validate(data)[0], True
        except _NotAStep:
            raise broken from None  # what the mended text lacks is not the model's mistake
    if not isinstance(data, dict):
        raise _NotAStep(f"it is a JSON {_json_type(data)}, not an object")
    fields, mended = _validate(data)
    return fields, repaired or mended


def _validate(data: dict[str, object]) -> tuple[_StepReply, bool]:
    """Check a step's keys; a missing next_action is taken as "continue" (flagged True)."""
    action = data.get("next_action")
    if action is not None and not (isinstance(action, str) and not action.strip()):
        try:
            return _StepReply.model_validate(data), False
        except ValidationError as error:
            raise _NotAStep(_describe(error)) from None
    # A title and content make a step; whether to go on is settled by the step bounds.
    try:
        return _StepReply.model_validate({**data, "next_action": "continue"}), True
    except ValidationError:
        pass
    try:  # validated again without the stand-in, so the missing key is named too
        _StepReply.model_validate({k: v for k, v in data.items() if k != "next_action"})
    except ValidationError as error:
        raise _NotAStep(_describe(error)) from None
    raise AssertionError("unreachable: a step without next_action cannot validate")


def _load_json(text: str) -> object:
    text = text.strip()
    if not text:
        raise _NotAStep("it was empty")
    # Endpoints without JSON mode often fence the object or say something around it.
    fenced = _FENCE.match(text)
    candidates = [text, fenced.group(1).strip() if fenced else None]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    first_error: json.JSONDecodeError | None = None
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError as error:
            first_error = first_error or error
    assert first_error is not None
    raise _NotAStep(f"it is not valid JSON ({first_error.msg} at character {first_error.pos})")


def _repair_json(text: str) -> dict[str, object] | None:
    """The object a broken JSON reply most likely meant (cut off, trailing commas, single
    quotes, a fence left open), or None when no object can be read from it."""
    start = text.find("{")
    if start < 0:
        return None  # prose: json_repair would make a string or a list of words of it
    try:
        data = json_repair.loads(text[start:])
    except Exception:  # the library's own failure must not end a run
        return None
    if isinstance(data, list):  # an object followed by more text comes back as a list
        data = next((item for item in data if isinstance(item, dict)), None)
    return data if isinstance(data, dict) and data else None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "reply"
        if item["type"] == "missing":
            problems.append(f'the key "{key}" is missing')
        elif item["type"] == "string_too_short":
            problems.append(f'"{key}" is empty')
        elif item["type"] == "literal_error":
            problems.append(
                f'"{key}" must be "continue" or "final_answer", not {json.dumps(item["input"])}'
            )
        elif item["type"] == "string_type":
            problems.append(f'"{key}" must be a string, not {_json_type(item["input"])}')
        else:
            problems.append(f'"{key}": {item["msg"]}')
    return "; ".join(problems)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _as_json(step: Step) -> str:
    return json.dumps(
        {"title": step.title, "content": step.content, "next_action": step.next_action},
        ensure_ascii=False,
    )


def _plain_answer(text: str) -> str:
    """The final answer as text, even when the model wrapped it in a JSON object anyway."""
    text = text.strip()
    try:
        data = _load_json(text) if text.startswith(("{", "```")) else None
    except _NotAStep:
        return text
    if isinstance(data, dict):
        for key in ("final_answer", "answer", "content"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return text


MODE = ModeSpec(
    name="steps",
    description="Validated JSON reasoning steps (after g1), then a plain-text answer.",
    options=StepsOptions,
    run=steps,
    result=StepsResult,
)
