"""Tolerant parsing of the markdown section contracts.

Models do not always follow the structure we ask for: they change heading levels, number or
bold their headings, add colons, wrap the reply in a code fence, or add headings of their own.
Only headings that name one of the contract's sections split the reply, so a model's own
`## Note` stays inside the section it was written in. Nothing is ever dropped: the raw text is
kept beside whatever was parsed, and every answer falls back to the whole reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .results import ReasoningStep, Synthesis, Turn, Usage

# canonical section -> the names a model might give it (normalised: lower case, words only)
TURN_SECTIONS = {
    "reasoning": ("reasoning", "step by step reasoning", "reasoning steps", "steps"),
    "answer": ("answer", "final answer", "my answer"),
    "critique": ("critique", "critique of earlier turns", "critique of previous turns", "review"),
    "new reasoning": ("new reasoning", "revised reasoning", "improved reasoning"),
    "updated answer": ("updated answer", "revised answer", "new answer", "improved answer"),
}
SYNTHESIS_SECTIONS = {
    "analysis of turns": (
        "analysis of turns",
        "analysis of the turns",
        "turn analysis",
        "analysis of drafts",
        "analysis of the drafts",
        "analysis",
    ),
    "comparison": ("comparison", "comparison of turns", "comparing the turns"),
    "final reasoning": ("final reasoning", "reasoning"),
    "comprehensive final answer": (
        "comprehensive final answer",
        "comprehensive answer",
        "final answer",
        "full answer",
    ),
    "concise answer": ("concise answer", "short answer", "brief answer", "tldr", "summary"),
}

_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^\s{0,3}#{1,6}\s*(?P<title>.+?)\s*#*\s*$")
_BOLD = re.compile(r"^\s{0,3}(?:\*\*|__)(?P<title>[^*_]+?)(?:\*\*|__)\s*(?P<rest>.*)$")
_NUMBERING = re.compile(r"^(?:\d+|[ivx]+|[a-e])[.)]\s+", re.IGNORECASE)
_OUTER_FENCE = re.compile(r"^\s*```[\w-]*\n(?P<body>.*)\n```\s*$", re.DOTALL)

_STEP_START = re.compile(
    r"^\s{0,3}(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:step\s+)?(?P<n>\d+)\s*[.):]\s*(?:\*\*|__)?\s*(?P<text>.*)$",
    re.IGNORECASE,
)
_EXPLANATION = re.compile(
    r"^\s*(?:[-*+>]\s*)?(?:\*\*|__|\*|_)?explanation\s*:?\s*(?:\*\*|__|\*|_)?\s*:?\s*(?P<text>.*)$",
    re.IGNORECASE,
)


def normalise(title: str) -> str:
    """Reduce a heading to lower-case words: '**2. New  Reasoning:**' -> 'new reasoning'."""
    title = title.strip().strip("*_` ").strip()
    title = _NUMBERING.sub("", title)
    title = re.sub(r"\([^)]*\)", " ", title)  # '## Concise Answer (2-3 sentences)'
    title = re.sub(r"[^\w\s]", " ", title.lower())
    return " ".join(title.split())


def unwrap(text: str) -> str:
    """Remove a code fence the model wrapped its whole reply in."""
    match = _OUTER_FENCE.match(text)
    return match.group("body") if match else text


def split_sections(text: str, known: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Split `text` at headings that name a known section; returns canonical name -> body."""
    lookup = {alias: name for name, aliases in known.items() for alias in aliases}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_fence = False
    for line in unwrap(text).splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _heading(line, lookup)
        if heading is not None:
            name, rest = heading
            current = sections.setdefault(name, [])
            if current:
                current.append("")  # a repeated section continues after a blank line
            if rest:
                current.append(rest)
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _heading(line: str, lookup: dict[str, str]) -> tuple[str, str] | None:
    for pattern in (_ATX, _BOLD):
        match = pattern.match(line)
        if not match:
            continue
        title = match.group("title")
        rest = match.groupdict().get("rest") or ""
        if pattern is _BOLD and rest and not title.rstrip().endswith(":"):
            return None  # bold words at the start of a sentence, not a heading
        name = lookup.get(normalise(title))
        if name is not None:
            return name, rest.strip()
        if ":" in title:  # '## Answer: 42'
            head, _, tail = title.partition(":")
            name = lookup.get(normalise(head))
            if name is not None:
                return name, (tail + " " + rest).strip()
    return None


def parse_steps(text: str | None) -> list[ReasoningStep]:
    """Read numbered steps, each optionally followed by an **Explanation:** line."""
    if not text:
        return []
    steps: list[ReasoningStep] = []
    body: list[str] = []
    explanation: list[str] | None = None

    def flush() -> None:
        if steps:
            steps[-1].text = "\n".join(body).strip()
            steps[-1].explanation = "\n".join(explanation).strip() if explanation else None

    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        start = None if in_fence else _STEP_START.match(line)
        if start and not _EXPLANATION.match(line):
            flush()
            steps.append(ReasoningStep(number=int(start.group("n")), text=""))
            body, explanation = [start.group("text")], None
            continue
        found = None if in_fence or not steps else _EXPLANATION.match(line)
        if found:
            explanation = [found.group("text")]
        elif explanation is not None:
            explanation.append(line)
        elif steps:
            body.append(line)
    flush()
    return steps


def parse_turn(
    index: int,
    content: str,
    *,
    usage: Usage | None = None,
    seconds: float = 0.0,
    truncated: bool = False,
) -> Turn:
    """Parse turn `index` (turn 1 has Reasoning/Answer, later turns Critique/New Reasoning/...)."""
    sections = split_sections(content, TURN_SECTIONS)
    reasoning_key, answer_key = (
        ("reasoning", "answer") if index == 1 else ("new reasoning", "updated answer")
    )
    # Accept the other contract's names too: a model may answer turn 2 with "## Answer".
    reasoning = (
        sections.get(reasoning_key) or sections.get("reasoning") or sections.get("new reasoning")
    )
    answer = sections.get(answer_key) or sections.get("answer") or sections.get("updated answer")
    return Turn(
        index=index,
        content=content,
        answer=answer or content.strip(),
        reasoning=parse_steps(reasoning),
        critique=sections.get("critique"),
        sections=sections,
        structured=bool(answer),
        truncated=truncated,
        usage=usage or Usage(),
        seconds=seconds,
    )


def parse_synthesis(
    content: str, *, usage: Usage | None = None, seconds: float = 0.0, truncated: bool = False
) -> Synthesis:
    """Parse the synthesis; its answer is the concise answer, else the comprehensive one."""
    sections = split_sections(content, SYNTHESIS_SECTIONS)
    concise = sections.get("concise answer") or None
    comprehensive = sections.get("comprehensive final answer") or None
    return Synthesis(
        content=content,
        answer=concise or comprehensive or content.strip(),
        analysis=sections.get("analysis of turns"),
        comparison=sections.get("comparison"),
        reasoning=parse_steps(sections.get("final reasoning")),
        comprehensive_answer=comprehensive,
        concise_answer=concise,
        sections=sections,
        structured=bool(concise or comprehensive),
        truncated=truncated,
        usage=usage or Usage(),
        seconds=seconds,
    )


# -- reflect's tagged chain ---------------------------------------------------------------------

# The tags the reflect prompt asks for. `<count>` (the steps left, written by the model for
# itself) is only taken out, so that it never shows in a step.
_CHAIN_TAG = re.compile(
    r"<\s*(?P<close>/)?\s*(?P<tag>step|reflection|reward|answer)\b[^<>]*>", re.IGNORECASE
)
_COUNT = re.compile(
    r"<\s*count\b[^<>]*>[^<]*(?:<\s*/\s*count\s*>)?|<\s*/\s*count\s*>", re.IGNORECASE
)
# The same parts written as labels at the start of a line ("Step 2:", "**Reflection:**",
# "Reward: 0.7", "Final answer:"), which small models write when they drop the tags. A
# "Reward:" line counts even among tags; the others only in a reply with no tags at all.
_CHAIN_LABEL = re.compile(
    r"^[ \t]*(?:[#>*_-]+[ \t]*)*(?P<tag>step(?:[ \t]*\d+)?|reflection|reward|final answer|answer)"
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
    r"(?:(?P<percent>%)|(?:/|out\s+of)\s*(?P<scale>\d+(?:\.\d+)?))?",
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


def read_chain(text: str, *, final: bool = True) -> Chain:
    """Read a reflect reply into steps and an answer, each with its reflection and reward.

    Tolerant: a missing closing tag ends where the next part begins, a missing opening tag
    before `</step>` makes the text before it a step, labels stand in for tags, and a
    reflection or reward with no part before it is left out (the raw text keeps it). With
    `final=False` (a reply still streaming) the last part stays incomplete until its reward
    is read whole or another part begins.
    """
    text = _COUNT.sub("", text)
    markers: list[tuple[int, int, str, bool]] = []  # (start, end, tag, closing)
    for match in _CHAIN_TAG.finditer(text):
        markers.append(
            (match.start(), match.end(), match.group("tag").lower(), bool(match.group("close")))
        )
    tagged = bool(markers)
    labels = _REWARD_LABEL if tagged else _CHAIN_LABEL
    for match in labels.finditer(text):
        tag = match.group("tag").lower()
        tag = "step" if tag.startswith("step") else "answer" if tag.endswith("answer") else tag
        # A label is an opening with no closing: it runs to the next part (a reward to its line's end).
        markers.append((match.start(), match.end(), f"label:{tag}", False))
    markers.sort()
    chain = Chain(tagged=bool(markers))
    if not markers:
        chain.trailing = text.strip()
        return chain

    # (tag, content start) of the element being read, if any.
    current: tuple[str, int] | None = None
    outside_from = 0  # where text outside any element began

    def close(tag: str, body: str, whole: bool) -> None:
        body = _CHAIN_TAG.sub("", body).strip() if tag != "reward" else body.strip()
        if tag in ("step", "answer"):
            chain.parts.append(ChainPart(kind=tag, content=body))  # type: ignore[arg-type]
            return
        last = chain.parts[-1] if chain.parts else None
        if last is None:
            return
        if tag == "reflection":
            last.reflection = f"{last.reflection}\n\n{body}" if last.reflection else body
        elif tag == "reward":
            last.reward = body
            last.complete = last.complete or whole

    position = 0
    for start, end, tag, closing in markers:
        if start < position:
            continue  # a label inside a tag already read
        label = tag.startswith("label:")
        tag = tag.removeprefix("label:")
        if current is not None:
            open_tag, body_start = current
            if closing and tag == open_tag:
                close(open_tag, text[body_start:start], True)
                current, outside_from, position = None, end, end
                continue
            # A new part (or a closing tag that is not ours) ends the open one.
            close(open_tag, text[body_start:start], True)
            current, outside_from = None, start
        if closing:
            if tag == "step" and text[outside_from:start].strip():
                close("step", text[outside_from:start], True)  # its opening tag was left out
            outside_from = position = end
            continue
        if label and tag == "reward":
            line_end = text.find("\n", end)
            if line_end < 0 and not final:
                current = ("reward", end)  # the line may go on
                position = end
                continue
            line_end = len(text) if line_end < 0 else line_end
            close("reward", text[end:line_end], True)
            current, outside_from, position = None, line_end, line_end
            continue
        current, position = (tag, end), end
    if current is not None:
        open_tag, body_start = current
        close(open_tag, text[body_start:], final)
        # An element cut off mid-way: what it had is kept, but only a final read trusts it.
    else:
        chain.trailing = _CHAIN_TAG.sub("", text[outside_from:]).strip()
    for part in chain.parts[:-1]:
        part.complete = True
    if final and chain.parts:
        chain.parts[-1].complete = True
    return chain


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
