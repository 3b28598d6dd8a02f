"""The reflect mode (a dynamic chain of thought with reflections and self-scored rewards): the
model reasons in small tagged steps within a step budget it is told, and every few steps
writes a reflection and scores its own progress from 0.0 to 1.0 (high: go on; middling:
adjust; low: go back and try another way); it ends with an answer, a last reflection and a
last reward.

The chain is one streamed call, read as it streams: each step is shown (with the reward that
follows it) as soon as it is complete. The budget is ours to enforce, not the model's: when
a step past it begins, the stream is closed there (a small model may write fifty steps).
A chain that stopped before its answer (over budget, cut off by its length limit, looping)
gets one closing call: the steps so far, how many of the budget they used, and "give your
answer" (after at most the steps left, none once the budget is spent). A model that gives no
<answer> at all has the text after its last step, else its last step, taken as the answer,
and the run says so. Every reply is kept whole in `result.raw`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from llamaberry.core.errors import InvalidReplyError
from llamaberry.core.events import CallFinished, CallStarted, TextDelta, TextReset, ThinkingDelta
from llamaberry.core.options import Options
from llamaberry.core.results import (
    ReflectAnswer,
    Reflected,
    ReflectResult,
    ReflectStep,
    Verdict,
    cut_off_line,
)
from llamaberry.modes import prompts
from llamaberry.run.runner import ModeSpec, RunContext, to_messages

# The call kind of the chain's calls in the run's log: "Chain 1", and "Chain 2" for the
# closing call. The steps and the answer read from them are events of their own.
CHAIN = "chain"

# The reward thresholds the prompt states: at or above GO_ON, go on; at or above ADJUST,
# adjust; below it, go back.
GO_ON = 0.8
ADJUST = 0.5


class ReflectOptions(Options):
    """How many steps the chain may take, and how often it stops to reflect."""

    step_budget: int = Field(12, ge=1, le=50, description="Most reasoning steps (reflect).")
    reflect_every: int = Field(
        3, ge=1, le=20, description="Steps between reflections and rewards (reflect)."
    )


def verdict(reward: float | None) -> Verdict | None:
    """What a reward tells the model to do: 'go on', 'adjust' or 'go back'."""
    if reward is None:
        return None
    return "go on" if reward >= GO_ON else "adjust" if reward >= ADJUST else "go back"


# -- reading the chain --------------------------------------------------------------------------

# The tags the prompt asks for. `<count>` (the steps left, written by the model for
# itself) is only taken out, so that it never shows in a step.
_CHAIN_TAG = re.compile(
    r"<\s*(?P<close>/)?\s*(?P<tag>step|reflection|reward|answer)\b[^<>]*>", re.IGNORECASE
)
_COUNT = re.compile(
    r"<\s*count\b[^<>]*>[^<]*(?:<\s*/\s*count\s*>)?|<\s*/\s*count\s*>", re.IGNORECASE
)
# The same parts written as labels at the start of a line ("Step 2:", "**Reflection:**",
# "Reward: 0.7", "Final answer:"), which small models write when they drop the tags (a step
# by its number, so that "Step-by-step, ..." stays prose). A
# "Reward:" line counts even among tags; the others only in a reply with no tags at all.
_CHAIN_LABEL = re.compile(
    r"^[ \t]*(?:[#>*_-]+[ \t]*)*(?P<tag>step[ \t]*\d+|reflection|reward|final answer|answer)"
    r"[ \t]*(?:\*\*|__)?[ \t]*[:.)-][ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_REWARD_LABEL = re.compile(
    r"^[ \t]*(?:[#>*_-]+[ \t]*)*(?P<tag>reward)[ \t]*(?:\*\*|__)?[ \t]*[:=-][ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_LEAD = re.compile(
    r"^\s*(?:[#>*_-]+\s*)*(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:.-]\s*(?:\*\*|__)?\s*",
    re.IGNORECASE,
)
_REWARD_NUMBER = re.compile(
    r"(?P<n>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
    r"(?:(?P<percent>%)|\(?\s*(?:/|out\s+of)\s*(?P<scale>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)


@dataclass
class ChainPart:
    """A step or the answer of a tagged chain, with the reflection and reward written after it."""

    kind: Literal["step", "answer"]
    content: str = ""
    reflection: str | None = None
    # The reward as the model wrote it; `read_reward` turns it into a number.
    reward: str | None = None
    # Nothing more can change it: a later part began, its reward was read whole, or the
    # text ended.
    complete: bool = False
    # Where it begins in the text read.
    start: int = 0


@dataclass
class Chain:
    """What `read_chain` found: the parts in order, and the text outside them."""

    parts: list[ChainPart] = field(default_factory=list)
    # Text after the last part that sits in no tag (a conclusion written without <answer>).
    trailing: str = ""
    # Whether the reply used the tags (or labels) at all.
    tagged: bool = False

    @property
    def steps(self) -> list[ChainPart]:
        """The step parts, in order."""
        return [part for part in self.parts if part.kind == "step"]

    @property
    def answer(self) -> ChainPart | None:
        """The first answer part, if there is one."""
        return next((part for part in self.parts if part.kind == "answer"), None)


def read_chain(text: str, *, final: bool = True, tagged: bool | None = None) -> Chain:
    """Read a reply into steps and an answer, each with its reflection and reward.

    Tolerant: a missing closing tag ends where the next part begins, a missing opening tag
    before `</step>` makes the text before it a step, labels stand in for tags, and a
    reflection or reward with no part before it is left out (the raw text keeps it). With
    `final=False` (a reply still streaming) the last part stays incomplete until its reward
    is read whole or another part begins. `tagged` says whether the reply uses tags (None:
    whether this text has any), for a reader that parses the end of a longer reply.
    """
    # Blanked rather than removed, so every position found is a position in `text`.
    text = _COUNT.sub(lambda match: " " * len(match.group()), text)
    markers = _markers(text, tagged)
    chain = Chain(tagged=bool(markers))
    if not markers:
        chain.trailing = text.strip()
        return chain
    walk = _ChainWalk(text, chain, final)
    for marker in markers:
        walk.take(*marker)
    walk.end()
    for part in chain.parts[:-1]:
        part.complete = True
    if final and chain.parts:
        chain.parts[-1].complete = True
    return chain


# Where a tag or label begins and ends, its tag ("label:step" for a label), whether it closes.
_Marker = tuple[int, int, str, bool]


def _markers(text: str, tagged: bool | None) -> list[_Marker]:
    """The tags and labels in `text`, in order. Labels other than a "Reward:" line count
    only in a reply without tags (`tagged`; None: whether `text` has any)."""
    markers: list[_Marker] = []
    for match in _CHAIN_TAG.finditer(text):
        markers.append(
            (match.start(), match.end(), match.group("tag").lower(), bool(match.group("close")))
        )
    if tagged is None:
        tagged = bool(markers)
    labels = _REWARD_LABEL if tagged else _CHAIN_LABEL
    for match in labels.finditer(text):
        tag = match.group("tag").lower()
        tag = "step" if tag.startswith("step") else "answer" if tag.endswith("answer") else tag
        # A label is an opening with no closing: it runs to the next part (a reward to its line's end).
        markers.append((match.start(), match.end(), f"label:{tag}", False))
    markers.sort()
    return markers


class _ChainWalk:
    """Reads a chain's parts out of its text, one marker at a time, into `chain`."""

    def __init__(self, text: str, chain: Chain, final: bool) -> None:
        self.text = text
        self.chain = chain
        self.final = final
        # (tag, where its content starts, where its marker starts) of the element being read.
        self.current: tuple[str, int, int] | None = None
        self.outside_from = 0  # where text outside any element began
        self.position = 0  # markers before this were read as part of an element

    def take(self, start: int, end: int, tag: str, closing: bool) -> None:
        """Read the marker at `start`..`end`."""
        if start < self.position:
            return  # a label inside a tag already read
        label = tag.startswith("label:")
        tag = tag.removeprefix("label:")
        if self.current is not None:
            open_tag, body_start, begin = self.current
            self._close(open_tag, begin, self.text[body_start:start], True)
            if closing and tag == open_tag:
                self.current, self.outside_from, self.position = None, end, end
                return
            # A new part (or a closing tag that is not ours) ended the open one.
            self.current, self.outside_from = None, start
        if closing:
            if tag == "step" and self.text[self.outside_from : start].strip():
                # Its opening tag was left out.
                self._close("step", self.outside_from, self.text[self.outside_from : start], True)
            self.outside_from = self.position = end
        elif label and tag == "reward":
            self._reward_line(start, end)
        else:
            self.current, self.position = (tag, end, start), end

    def end(self) -> None:
        """The text has ended: close what is open, or keep the text after the last part."""
        if self.current is not None:
            open_tag, body_start, begin = self.current
            # An element cut off mid-way: what it had is kept, but only a final read trusts it.
            self._close(open_tag, begin, self.text[body_start:], self.final)
        else:
            self.chain.trailing = _CHAIN_TAG.sub("", self.text[self.outside_from :]).strip()

    def _reward_line(self, start: int, end: int) -> None:
        """A "Reward:" label: the reward runs to its line's end."""
        line_end = self.text.find("\n", end)
        if line_end < 0 and not self.final:
            self.current = ("reward", end, start)  # the line may go on
            self.position = end
            return
        line_end = len(self.text) if line_end < 0 else line_end
        self._close("reward", start, self.text[end:line_end], True)
        self.current, self.outside_from, self.position = None, line_end, line_end

    def _close(self, tag: str, begin: int, body: str, whole: bool) -> None:
        """An element has been read: a part of its own, or the reflection or reward of the
        part before it."""
        body = _CHAIN_TAG.sub("", body).strip() if tag != "reward" else body.strip()
        if tag in ("step", "answer"):
            self.chain.parts.append(ChainPart(kind=tag, content=body, start=begin))  # type: ignore[arg-type]
            return
        last = self.chain.parts[-1] if self.chain.parts else None
        if last is None:
            return
        if tag == "reflection":
            last.reflection = f"{last.reflection}\n\n{body}" if last.reflection else body
        elif tag == "reward":
            last.reward = body
            last.complete = last.complete or whole


def answer_text(text: str) -> str:
    """A conclusion written without tags, less an 'Answer:' label it starts with."""
    return _ANSWER_LEAD.sub("", text.strip(), count=1).strip()


def read_reward(written: str | None) -> tuple[float | None, bool]:
    """A reward as a number from 0.0 to 1.0, and whether it was outside that range and clamped.

    Reads '0.7', 'Reward: 0.7', '7/10', '8 out of 10' and '70%'; None when there is no number.
    """
    if not written:
        return None, False
    found = _REWARD_NUMBER.search(_REWARD_LABEL.sub("", written.strip(), count=1))
    if not found:
        return None, False
    value = float(found.group("n"))
    if found.group("percent"):
        value /= 100
    elif found.group("scale") and float(found.group("scale")) > 0:
        value /= float(found.group("scale"))
    clamped = not 0.0 <= value <= 1.0
    return min(1.0, max(0.0, value)), clamped


class _Reader:
    """Reads one call's reply as it streams, and turns its parts into events as each one is
    complete; `stop` says why the stream should be closed (None: read on).

    Only the end of the reply is read again as it grows: from the last finished part on, as
    nothing before it can change. Read whole each time, a fifty-step reply would cost its
    length again for every tag.
    """

    def __init__(self, result: ReflectResult, budget: int) -> None:
        self.result = result
        self.budget = budget
        self.first = len(result.steps) + 1  # the number this reply's first step gets
        self._clear()

    def _clear(self) -> None:
        self.text = ""  # the reply so far, as it came
        self.chain = Chain()  # the last read of the reply's end
        self.base = 0  # where in `text` that read begins
        self.kinds: list[str] = []  # "step" or "answer", per part announced so far
        self.finished = 0  # parts finished (and added to the result)
        self.answer_at: int | None = None  # which part is the answer, once it began
        # Whether the reply uses tags: once it has, labels alone never make a part.
        self.tagged: bool | None = None
        # When the part being written began: the end of the one before, or the first text.
        self.began: float | None = None
        self.thinking: list[str] = []
        self.stop: Literal["budget", "answered"] | None = None

    def feed(self, delta: str) -> list[object]:
        """Take a piece of the reply; the events of the parts it completed."""
        self.text += delta
        if self.began is None:
            self.began = time.perf_counter()
        # A part can only begin or end at a tag or a line's end.
        if not any(mark in delta for mark in "<>\n"):
            return []
        return self._advance(final=False)

    def finish(self) -> list[object]:
        """The reply has ended: what is left becomes complete."""
        return self._advance(final=True)

    def think(self, text: str) -> ThinkingDelta:
        """The model's own thinking, shown with the part it comes before."""
        self.thinking.append(text)
        kind, index = self._next()
        return ThinkingDelta(kind=kind, index=index, text=text)

    def reset(self, reason: str) -> list[object]:
        """The stream started again from scratch: forget this reply's parts."""
        events: list[object] = [
            TextReset(kind=kind, index=index, reason=reason)
            for kind, index in (self._name(offset) for offset in range(len(self.kinds)))
        ]
        del self.result.steps[self.first - 1 :]
        if self.answer_at is not None and self.answer_at < self.finished:
            self.result.final = None
        self._clear()
        return events

    def _name(self, offset: int) -> tuple[str, int]:
        """The kind and number of the part announced at `offset`."""
        if self.kinds[offset] == "answer":
            return "answer", 1
        return "step", self.first + self.kinds[:offset].count("step")

    def _next(self) -> tuple[str, int]:
        """The part being written, or the step that comes next."""
        if len(self.kinds) > self.finished:
            return self._name(self.finished)
        return "step", self.first + self.kinds.count("step")

    def _advance(self, *, final: bool) -> list[object]:
        window = self.text[self.base :]
        if not self.tagged and _CHAIN_TAG.search(window):
            self.tagged = True
        chain = self.chain = read_chain(window, final=final, tagged=self.tagged)
        # The window begins with the last finished part (if any): its place among all parts.
        skipped = max(self.finished - 1, 0) if self.base else 0
        steps = self.kinds[:skipped].count("step")
        events: list[object] = []
        for number, part in enumerate(chain.parts):
            offset = skipped + number
            if self.answer_at is not None and offset > self.answer_at:
                self.stop = "answered"  # the model went on after its answer
                break
            steps += part.kind == "step"
            index = self.first + steps - 1 if part.kind == "step" else 1
            if part.kind == "step" and index > self.budget:
                self.stop = "budget"
                break
            if offset >= len(self.kinds):
                self.kinds.append(part.kind)
                if part.kind == "answer":
                    self.answer_at = offset
                events.append(CallStarted(kind=part.kind, index=index))
            if offset >= self.finished and part.complete:
                self.finished += 1
                events += self._finished(part.kind, index, part)
        # Next time, read from the last finished part on.
        last = self.finished - 1 - skipped
        if self.finished and 0 <= last < len(chain.parts):
            self.base += chain.parts[last].start
        return events

    def _finished(self, kind: str, index: int, part: ChainPart) -> list[object]:
        now = time.perf_counter()
        reward, clamped = read_reward(part.reward)
        fields = {
            "content": part.content,
            "reflection": part.reflection or None,
            "reward": reward,
            "reward_written": part.reward.strip() if part.reward else None,
            "reward_clamped": clamped,
            "verdict": verdict(reward),
            "thinking": "".join(self.thinking),
            # From the end of the part before it: the time the model spent writing it.
            "seconds": now - (self.began or now),
        }
        self.thinking, self.began = [], now
        done: Reflected
        if kind == "answer":
            done = self.result.final = ReflectAnswer.model_validate(fields)
        else:
            done = ReflectStep.model_validate({"index": index, **fields})
            self.result.steps.append(done)
        # The part's text arrives whole, as it is complete: a tagged reply read piece by
        # piece would show its tags, and half-read parts can still change.
        return [
            TextDelta(kind=kind, index=index, text=part.content),
            CallFinished(kind=kind, index=index, result=done),
        ]


async def _read(
    ctx: RunContext, index: int, messages: list, reader: _Reader
) -> AsyncIterator[object]:
    """Make chain call `index`, yielding the events of its parts as they complete.

    Until a part is recognised the reply streams as the chain's own text, so a model that
    writes no tags (the embedded one) is still seen writing, not silent until its end.
    """
    shown = 0  # how much of the reply has streamed as the chain's text
    try:
        async for event in ctx.call(
            CHAIN, index, messages, announce=False, until=lambda: reader.stop is not None
        ):
            if isinstance(event, TextDelta):
                parts = reader.feed(event.text)
                if not reader.kinds and not reader.tagged and _no_part_begins(reader.text):
                    yield TextDelta(kind=CHAIN, index=index, text=reader.text[shown:])
                    shown = len(reader.text)
                for part in parts:
                    yield part
            elif isinstance(event, ThinkingDelta):
                yield reader.think(event.text)
            elif isinstance(event, TextReset):
                if shown:
                    yield TextReset(kind=CHAIN, index=index, reason=event.reason)
                    shown = 0
                for found in reader.reset(event.reason):
                    yield found
            else:
                yield event
    finally:
        # Whatever happens, the reply as it came is kept.
        ctx.result.raw.append(reader.text)
    for found in reader.finish():
        yield found


def _no_part_begins(text: str) -> bool:
    """Whether the reply's first line is written and began no part (a `<` or a label there
    may still begin one): from then on its text can stream as it comes."""
    return "\n" in text.lstrip() or len(text) > 200


def _written(steps: list[ReflectStep]) -> str:
    """The chain so far in its tags, as the closing call is given it."""
    lines = []
    for step in steps:
        lines.append(f"<step>{step.content}</step>")
        if step.reflection:
            lines.append(f"<reflection>{step.reflection}</reflection>")
        if step.reward_written:
            lines.append(f"<reward>{step.reward_written}</reward>")
    return "\n".join(lines)


async def reflect(ctx: RunContext, options: ReflectOptions) -> AsyncIterator:
    """Yield the events of a reflect run: the chain's steps as they complete, then its answer."""
    result: ReflectResult = ctx.result
    question = ctx.run.question
    budget, every = options.step_budget, options.reflect_every
    reader = _Reader(result, budget)
    messages = to_messages(prompts.reflect_messages(question, budget, every))
    async for event in _read(ctx, 1, messages, reader):
        yield event
    reply = ctx.reply
    assert reply is not None

    why = None
    if reader.stop == "budget":
        result.budget_stopped = True
        yield ctx.note(
            CHAIN,
            1,
            "stopped",
            f"The chain went past its budget of {budget} steps, so it was stopped after "
            f"step {budget} (--step-budget).",
        )
        why = f"You have used all {budget} steps of your budget."
    elif reader.stop == "answered":
        yield ctx.note(
            CHAIN, 1, "stopped", "The model went on after its answer, so it was stopped there."
        )
    if result.final is None and why is None:
        if reply.truncated:
            why = f"Your reasoning was {cut_off_line(reply.cut_off_by)} before its answer."
        elif reply.looped:
            why = "Your reasoning began to repeat itself before its answer."
        if why is not None:
            used = len(result.steps)
            why += f" You have used {used} of your {budget} steps."
    last = reader
    if result.final is None and why is not None:
        # One closing call, so a chain stopped before its answer still ends in one.
        last = _Reader(result, budget)
        closing = prompts.reflect_close_messages(
            question, budget, every, _written(result.steps), why, budget - len(result.steps)
        )
        async for event in _read(ctx, 2, to_messages(closing), last):
            yield event
        if last.stop == "budget":
            result.budget_stopped = True
            yield ctx.note(
                CHAIN,
                2,
                "stopped",
                "The closing call began more steps past the budget, so it was stopped there.",
            )

    if result.final is not None and result.final.content:
        result.answer_from = "answer"
        ctx.run.answer = result.final.content
        # Asked for JSON or tools: the answer, given in that form by one more call.
        async for event in ctx.closing_call(ctx.run.answer):
            yield event
        return
    trailing = answer_text(last.chain.trailing)
    if trailing:
        result.answer_from = "trailing text"
        ctx.run.answer = trailing
        line = "The model gave no <answer>; the text after its last step is taken as the answer."
    elif result.steps:
        result.answer_from = "last step"
        ctx.run.answer = result.steps[-1].content
        line = "The model gave no <answer>; its last step is taken as the answer."
    else:
        error = "the model gave no answer and no step (its reply is kept as it came)"
        if ctx.run.calls:
            ctx.run.calls[-1].error = error
        raise InvalidReplyError(error)
    yield ctx.note(CHAIN, len(result.raw), "fallback", line)
    async for event in ctx.closing_call(ctx.run.answer):
        yield event


MODE = ModeSpec(
    name="reflect",
    description="Small tagged steps with reflections and self-scored rewards, within a budget.",
    options=ReflectOptions,
    run=reflect,
    result=ReflectResult,
    default=False,
)
