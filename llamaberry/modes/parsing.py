"""Tolerant parsing of the markdown section contracts.

Models do not always follow the structure we ask for: they change heading levels, number or
bold their headings, add colons, wrap the reply in a code fence, or add headings of their own.
Only headings that name one of the contract's sections split the reply, so a model's own
`## Note` stays inside the section it was written in. Nothing is ever dropped: the raw text is
kept beside whatever was parsed, and every answer falls back to the whole reply.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamaberry.core.results import ReasoningStep, Synthesis, Turn, Usage

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

_ATX = re.compile(r"^\s{0,3}#{1,6}\s*(?P<title>.+?)\s*#*\s*$")
_BOLD = re.compile(r"^\s{0,3}(?:\*\*|__)(?P<title>[^*_]+?)(?:\*\*|__)\s*(?P<rest>.*)$")
_NUMBERING = re.compile(r"^(?:\d+|[ivx]+|[a-e])[.)]\s+", re.IGNORECASE)
_OUTER_FENCE = re.compile(r"^\s*```[\w-]*\n(?P<body>.*)\n```\s*$", re.DOTALL)
_PARENTHESES = re.compile(r"\([^)]*\)")
_NOT_WORD = re.compile(r"[^\w\s]")
# How a line starts once its indent is stripped: a code fence's marks, or a heading's (`#`, or
# `**` / `__` around bold words). One look at them rules out the regexes for most lines.
_FENCE_START = ("```", "~~~")
_HEADING_START = ("#", "**", "__")

_STEP_START = re.compile(
    r"^\s{0,3}(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:step\s+)?(?P<n>\d+)\s*[.):]\s*(?:\*\*|__)?\s*(?P<text>.*)$",
    re.IGNORECASE,
)
_EXPLANATION = re.compile(
    r"^\s*(?:[-*+>]\s*)?(?:\*\*|__|\*|_)?explanation\s*:?\s*(?:\*\*|__|\*|_)?\s*:?\s*(?P<text>.*)$",
    re.IGNORECASE,
)


# Cached: the same few headings ('## Answer', '**Explanation:**') come back in every reply.
@functools.lru_cache(maxsize=1024)
def normalise(title: str) -> str:
    """Reduce a heading to lower-case words: '**2. New  Reasoning:**' -> 'new reasoning'."""
    title = title.strip().strip("*_` ").strip()
    title = _NUMBERING.sub("", title)
    title = _PARENTHESES.sub(" ", title)  # '## Concise Answer (2-3 sentences)'
    title = _NOT_WORD.sub(" ", title.lower())
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
        start = line.lstrip()
        if start.startswith(_FENCE_START):
            in_fence = not in_fence
        heading = (
            None if in_fence or not start.startswith(_HEADING_START) else _heading(line, lookup)
        )
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
    # The step being read: its number, its lines, and its explanation's lines once begun.
    number: int | None = None
    body: list[str] = []
    explanation: list[str] | None = None

    def flush() -> None:
        # Each step is built once, whole (setting a model's fields one by one costs more).
        if number is not None:
            steps.append(
                ReasoningStep(
                    number=number,
                    text="\n".join(body).strip(),
                    explanation="\n".join(explanation).strip() if explanation else None,
                )
            )

    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(_FENCE_START):
            in_fence = not in_fence
        start = None if in_fence else _STEP_START.match(line)
        if start and not _EXPLANATION.match(line):
            flush()
            number = int(start.group("n"))
            body, explanation = [start.group("text")], None
            continue
        found = None if in_fence or number is None else _EXPLANATION.match(line)
        if found:
            explanation = [found.group("text")]
        elif explanation is not None:
            explanation.append(line)
        elif number is not None:
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


# -- our own prompt coming back ---------------------------------------------------------------
# Small models (the embedded 135M one) often write back what they were sent: the tags we wrap
# the question and earlier turns in, the labels on them, our instructions. That is never an
# answer. What they copy of the question or of earlier turns is not an answer of its own either.

_OUR_TAG = re.compile(r"</?\s*(?:question|turn|draft|conversation)\b[^>]*>", re.IGNORECASE)
_OUR_LABEL = re.compile(r"^\s*(?:your\s+)?(?:turn|draft)\s+\d+\s*:?\s*", re.IGNORECASE)
# Where a sentence of our prompt ends: at . ! ? or : and a space, or at a blank line or a
# heading (a prompt's lines are wrapped, so a single line end is not one).
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n\s*\n|\n(?=#|\d+\.|- )")


@dataclass
class Echo:
    """A reply read for echoes of our prompt: `text` is the reply without them."""

    text: str
    echoed: bool  # it held some of our tags, labels or instructions
    own: bool  # something of its own is left once what it copied is set aside too


def _plain(text: str) -> str:
    return " ".join(text.casefold().split())


def _sentences(texts: Sequence[str], least_words: int = 4) -> list[str]:
    # A heading is a sentence of its own.
    texts = [re.sub(r"^(#+ .*)$", "\\1\n", text, flags=re.MULTILINE) for text in texts]
    found = {_plain(s) for text in texts for s in _SENTENCE_END.split(text)}
    return sorted((s for s in found if len(s.split()) >= least_words), key=len, reverse=True)


def _loose(sentence: str) -> str:
    """A pattern for `sentence` however its spaces were written."""
    return r"\s+".join(re.escape(word) for word in sentence.split())


@functools.lru_cache(maxsize=64)
def _prompt_sentences(instructions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The sentences of our prompt that mark an echo, and the short heads that do only at the
    start of a line. Prompts repeat from run to run, so they are split once."""
    said = [s for s in _sentences(instructions) if not s.startswith("#")]
    # A short one ("Final review:") only where a line begins with it: too common elsewhere.
    heads = [
        s
        for s in _sentences(instructions, least_words=2)
        if len(s.split()) < 4 and not s.startswith("#")  # never a section heading we asked for
    ]
    return said, heads


def read_echo(text: str, instructions: Sequence[str], copied: Sequence[str] = ()) -> Echo:
    """`text` without our tags, our labels and any sentence of `instructions` (the prompt's
    own wording), and whether anything of its own is left beside what it repeats of `copied`
    (the question, earlier turns)."""
    said, heads = _prompt_sentences(tuple(instructions))
    # Only what the reply holds somewhere is looked for line by line.
    whole = _plain(text)
    said = [s for s in said if s in whole]
    heads = [s for s in heads if s in whole]
    kept: list[str] = []
    echoed = False
    for line in text.splitlines():
        bare = _OUR_TAG.sub(" ", line)
        bare = _OUR_LABEL.sub("", bare)
        for head in heads:
            if _plain(bare).startswith(head):
                bare = re.sub(r"^\s*" + _loose(head), "", bare, flags=re.IGNORECASE)
        for sentence in said:
            if sentence in _plain(bare):
                bare = re.sub(_loose(sentence), " ", bare, flags=re.IGNORECASE)
        if bare != line and _plain(bare) != _plain(line):
            echoed = True
        kept.append(bare.rstrip() if bare.strip() else "")
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    left = _plain(cleaned)
    for sentence in _sentences(copied, least_words=1):
        left = left.replace(sentence, " ")
    own = any(ch.isalnum() for ch in left)
    return Echo(text=cleaned, echoed=echoed, own=own)
