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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llamaberry.core.results import CallResult, Message, ReasoningStep, Synthesis, Turn, Usage

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
# A label ('Turn 2:', 'Draft 1' on a line of its own), not a sentence that names a turn or draft
# ('Draft 1 and draft 2 count 3').
_OUR_LABEL = re.compile(r"^\s*(?:your\s+)?(?:turn|draft)\s+\d+\s*(?::\s*|$)", re.IGNORECASE)
# The same at the start of any line: whether a reply holds one at all.
_OUR_LABEL_ANYWHERE = re.compile(_OUR_LABEL.pattern, re.IGNORECASE | re.MULTILINE)
# Where a sentence of our prompt ends: at . ! ? or : and a space, or at a blank line or a
# heading (a prompt's lines are wrapped, so a single line end is not one).
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n\s*\n|\n(?=#|\d+\.|- )")


@dataclass
class Echo:
    """A reply read for echoes of our prompt: `text` is the reply without them."""

    text: str
    echoed: bool  # it held some of our tags, labels or instructions
    # What it may have copied (the question, earlier turns), and our prompt's word stems when
    # it was mostly runs of our wording: what `own` is read against.
    copied: Sequence[str] = field(default=(), repr=False)
    stems: frozenset[str] | None = field(default=None, repr=False)

    @functools.cached_property
    def own(self) -> bool:
        """Something of its own is left once what it copied is set aside too. Worked out only
        when asked (a reply that echoed nothing is rarely asked): splitting every earlier turn
        into sentences is most of the cost of reading a reply."""
        left = _plain(self.text)
        for sentence in _sentences(self.copied, least_words=1):
            left = left.replace(sentence, " ")
        if self.stems is not None:
            return _has_its_own(left, self.stems)
        return any(ch.isalnum() for ch in left)


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


# A small model does not always write back whole sentences of ours: it splices half of one
# instruction onto half of another, drops words, changes a few ("Change the earlier answer only
# if your reasoning proves nothing."). What it writes is still our words in our order. So a
# reply's words are also read in runs: a word that sits in a run of _RUN words (casefolded,
# punctuation dropped) that our prompt holds too is our wording. A reply of at least
# _LEAST_WORDS words of which at least _ECHO_SHARE are our wording is our prompt written back.
# Runs of three, not four: a changed word breaks every run it is in, and with runs of four a
# sentence with two words changed is no longer half ours. The figures: the embedded 135M
# model's spliced echoes were 55% to 100% our wording; no reply in the tests' corpora of real
# answers (tests/scorer_corpus.py, tests/heldout) is over 13%. Under _LEAST_WORDS a few words
# of ours ("the answer, stated plainly, is 42") are too few to judge a reply by.
_WORD = re.compile(r"\w+")
_LINE_START = re.compile(r"^[\s,;:.!?)\]]+")  # what a removed run leaves at a line's start
_AFTER_WORD = re.compile(r"[^\w\n]*")  # the punctuation and spaces after a word, on its line
_RUN = 3
_ECHO_SHARE = 0.5
_LEAST_WORDS = 8
_ALL_OURS = [True] * _RUN
# Our section headings are asked for: a reply that writes them is not echoing.
_HEADING_LINE = re.compile(r"^\s{0,3}#.*$", re.MULTILINE)
# How much of a word marks it as one of our prompt's words, however it is inflected
# ("sentence" for "sentences", "detailed" for "detail").
_STEM = 5
# What is left of a mostly-ours reply once our runs are out is its own answer only with a
# number of its own or this many different words (of three letters or more) that are not our
# prompt's: a word or two changed in our sentence is not an answer.
_OWN_WORDS = 3


@functools.lru_cache(maxsize=64)
def _prompt_words(
    instructions: tuple[str, ...],
) -> tuple[frozenset[tuple[str, ...]], frozenset[str]]:
    """The runs of _RUN words our prompt holds, and the stems of its words: built once per
    prompt, as its sentences are."""
    runs: set[tuple[str, ...]] = set()
    stems: set[str] = set()
    for text in instructions:
        for part in _HEADING_LINE.split(text):
            words = _WORD.findall(part.casefold())
            runs.update(tuple(words[i : i + _RUN]) for i in range(len(words) - _RUN + 1))
        stems.update(word[:_STEM] for word in _WORD.findall(text.casefold()))
    return frozenset(runs), frozenset(stems)


def _without_our_runs(text: str, runs: frozenset[tuple[str, ...]]) -> str | None:
    """`text` less the runs of our wording in it when they are most of it, else None."""
    ours = _our_words(_WORD.findall(text.casefold()), runs)
    if len(ours) < _LEAST_WORDS or sum(ours) < _ECHO_SHARE * len(ours):
        return None
    words = list(_WORD.finditer(text))  # where each word is, read only for a reply that echoes
    if len(words) != len(ours):  # casefolding split a word (rare): read it again as written
        ours = _our_words([word.group().casefold() for word in words], runs)
    kept, start = [], 0
    for word, is_ours in zip(words, ours, strict=True):
        if is_ours:
            kept.append(text[start : word.start()])
            # The run's word goes, with the punctuation and spaces after it on its line.
            start = _AFTER_WORD.match(text, word.end()).end()  # type: ignore[union-attr]
    kept.append(text[start:])
    lines = (_LINE_START.sub("", line).rstrip() for line in "".join(kept).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _our_words(keys: list[str], runs: frozenset[tuple[str, ...]]) -> list[bool]:
    """For each word, whether it sits in a run of _RUN words that our prompt holds too."""
    ours = [False] * len(keys)
    for i, run in enumerate(zip(*(keys[k:] for k in range(_RUN)), strict=False)):
        if run in runs:
            ours[i : i + _RUN] = _ALL_OURS
    return ours


def _has_its_own(left: str, stems: frozenset[str]) -> bool:
    """Whether what is left of a reply that was mostly our wording says something of its own:
    a number, or _OWN_WORDS different words of three letters or more, that are not our
    prompt's ('is' and 'it' between our words are not an answer)."""
    new = {word for word in _WORD.findall(left) if word[:_STEM] not in stems}
    words = {word for word in new if len(word) > 2}
    return len(words) >= _OWN_WORDS or any(ch.isdigit() for word in new for ch in word)


def read_echo(text: str, instructions: Sequence[str], copied: Sequence[str] = ()) -> Echo:
    """`text` without our tags, our labels and any sentence of `instructions` (the prompt's
    own wording), and whether anything of its own is left beside what it repeats of `copied`
    (the question, earlier turns). A reply made mostly of runs of our wording (a spliced or
    reworded instruction) is an echo too, and has something of its own only when what is left
    of it once those runs are out has words or a number that are not ours."""
    said, heads = _prompt_sentences(tuple(instructions))
    # Only what the reply holds somewhere is looked for line by line.
    whole = _plain(text)
    said = [s for s in said if s in whole]
    heads = [s for s in heads if s in whole]
    kept: list[str] = []
    echoed = False
    marked = _OUR_TAG.search(text) or _OUR_LABEL_ANYWHERE.search(text)
    lines = text.splitlines() if said or heads or marked else ()
    if not lines:  # nothing of ours to take out: each line as it is, less its trailing spaces
        kept = [line.rstrip() for line in text.splitlines()]
    for line in lines:
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
    runs, stems = _prompt_words(tuple(instructions))
    spliced = _without_our_runs(cleaned, runs)
    if spliced is not None:
        return Echo(text=spliced, echoed=True, copied=copied, stems=stems)
    return Echo(text=cleaned, echoed=echoed, copied=copied)


def ours(messages: Sequence[Message], copied: Sequence[str]) -> list[str]:
    """What we wrote in `messages` ourselves: their text less what they carry of `copied` (the
    question, earlier turns or drafts)."""
    written = []
    for message in messages:
        text = message.content
        for given in copied:
            text = text.replace(given.strip(), " ")
        written.append(text)
    return written


def own_answer(text: str, instructions: Sequence[str], copied: Sequence[str]) -> str:
    """`text` as an answer: as it is, or what is left of it once what it wrote back of our
    prompt is out, or '' when it wrote nothing of its own (see read_echo)."""
    echo = read_echo(text, instructions, copied)
    if not echo.echoed:
        return text
    return echo.text if echo.own else ""


def best_answer(answers: Iterable[tuple[CallResult, str]]) -> tuple[CallResult, str] | None:
    """The first of `answers` (a call's result and its answer, in the order a run prefers them)
    whose call finished whole, not cut off or stopped in a loop, with an answer; else the first
    with any answer."""
    usable = [(result, answer) for result, answer in answers if answer.strip()]
    whole = [
        (result, answer) for result, answer in usable if not (result.truncated or result.looped)
    ]
    chosen = whole or usable
    return chosen[0] if chosen else None


def instead_of_echo(
    echo: Echo, answers: Iterable[tuple[CallResult, str]], kind: str
) -> tuple[str, str]:
    """The run's answer when its synthesis wrote back our prompt, and the line that says so:
    what the synthesis wrote of its own, else the best of the earlier calls' `answers` (see
    best_answer), which are of `kind` ('turn', 'draft')."""
    if echo.own:
        return echo.text, (
            "The synthesis repeated parts of the prompt (its tags or wording); they are left "
            "out of the answer."
        )
    best = best_answer(answers)
    if best is not None:
        result, answer = best
        return answer, (
            f"The synthesis only repeated the prompt and the {kind}s, so the answer is "
            f"{result.heading().lower()}'s."
        )
    return echo.text or "(no answer)", (
        f"The synthesis only repeated the prompt, and no {kind} gave an answer of its own."
    )
