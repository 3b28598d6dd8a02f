"""Scoring a model's answer against a known one: exact, number, contains and choice.

Answers come back as sentences ("There are three r's in strawberry."), so each scorer first
pulls the final answer out of the text, then compares. Every scorer returns what it extracted,
so a wrong score can be checked by eye in the per-item results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Scorer = Literal["exact", "number", "contains", "choice"]
SCORERS: tuple[Scorer, ...] = ("exact", "number", "contains", "choice")


@dataclass(frozen=True)
class Score:
    """The verdict on one answer: right or not, and what was read as the answer."""

    correct: bool
    predicted: str | None
    scorer: Scorer


# -- reading the final answer out of a reply ----------------------------------------------------

# Phrases after which models put their answer; the last one in the text wins.
_MARKER = re.compile(
    r"(?:####|\\boxed\{|final answer\s*(?:is|:)|answer\s*(?:is|:)|concise answer\s*:)"
    r"[\s*:]*",
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.DOTALL)


def final_segment(text: str) -> str:
    """The part of a reply most likely to hold its answer: after the last answer marker, else
    the last bold span, else the last non-empty line."""
    markers = list(_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end() :].strip()
        if tail:
            return tail.splitlines()[0]
    bolds = [m.group(1) or m.group(2) for m in _BOLD.finditer(text)]
    if bolds:
        return bolds[-1]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalize(text: str) -> str:
    """Casefold, drop markdown emphasis, quotes and end punctuation, and squeeze spaces."""
    text = re.sub(r"[*_`]+", "", text).casefold()
    text = re.sub(r"[\"'“”‘’]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" .,:;!?()[]{}")


# -- numbers ------------------------------------------------------------------------------------

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "once": 1,
    "twice": 2,
    "thrice": 3,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))
_NUMBER = re.compile(
    r"(?<![\w.])(?P<digits>-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?)"
    r"(?![\d.]*\w)"
    rf"|(?P<words>\b(?:{_WORD})(?:[\s-]+(?:and[\s-]+)?(?:{_WORD}))*\b)",
    re.IGNORECASE,
)


def _words_value(words: str) -> int:
    total = current = 0
    for word in re.split(r"[\s-]+", words.lower()):
        if word == "and":
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return total + current


def numbers(text: str) -> list[tuple[Fraction, str]]:
    """Every number in `text`, in order, as (value, how it was written): digits, decimals,
    fractions, thousands separators and number words ("twenty-one", "twice")."""
    found = []
    for match in _NUMBER.finditer(text):
        written = match.group()
        if match.group("words"):
            found.append((Fraction(_words_value(written)), written))
            continue
        digits = written.replace(",", "")
        if not re.search(r"\d", digits):
            continue
        try:
            value = Fraction(digits)
        except (ValueError, ZeroDivisionError):
            continue
        found.append((value, written))
    return found


def parse_gold(gold: str) -> str:
    """The gold answer itself: for GSM8K-style golds, what follows the last '####'."""
    if "####" in gold:
        return gold.rsplit("####", 1)[1].strip()
    return gold.strip()


def _same_number(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= Fraction(1, 10**6) * max(Fraction(1), abs(b))


def score_number(answer: str, gold: str) -> Score:
    """Right when the answer's number equals the gold's (0.9 == .9, 3 == three, 1,000 == 1000)."""
    gold_numbers = numbers(parse_gold(gold))
    if not gold_numbers:
        raise ValueError(f"gold answer {gold!r} holds no number")
    target = gold_numbers[0][0]
    found = numbers(final_segment(answer)) or numbers(answer)
    if not found:
        return Score(False, None, "number")
    value, written = found[0]
    return Score(_same_number(value, target), written, "number")


# -- choices ------------------------------------------------------------------------------------

_LETTER_GOLD = re.compile(r"^\(?([A-Ja-j])[).:]?$")
_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
# Upper-case letters only, except after "option": a lower-case "(a)" is usually a list marker.
_CHOICE_PATTERNS = (
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b(?:option|choice|letter)\s+\(?([A-J])\b", re.IGNORECASE),
    re.compile(r"^\(?([A-J])[).:](?:\s|$)"),
)


def _choice_of(text: str) -> str | None:
    """A choice letter or yes/no read from a short answer segment."""
    stripped = normalize(text)
    bare = _LETTER_GOLD.match(stripped.upper()) if len(stripped) <= 3 else None
    if bare:
        return bare.group(1).upper()
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text.strip())
        if found:
            return found[-1].upper()
    word = re.search(r"\b(yes|no|true|false)\b", text, re.IGNORECASE)
    return _YES_NO[word.group(1).lower()] if word else None


def score_choice(answer: str, gold: str) -> Score:
    """Right when the chosen letter (B, (B), 'option B') or yes/no matches the gold's."""
    gold = parse_gold(gold)
    expected = _choice_of(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not a choice letter or yes/no")
    segment = final_segment(answer)
    predicted = _choice_of(segment) or _choice_of(answer.strip().splitlines()[0] if answer else "")
    return Score(predicted == expected, predicted, "choice")


# -- text ---------------------------------------------------------------------------------------


def score_exact(answer: str, gold: str) -> Score:
    """Right when the answer, or its final segment, equals the gold once normalized."""
    expected = normalize(parse_gold(gold))
    for candidate in (answer, final_segment(answer)):
        if normalize(candidate) == expected:
            return Score(True, candidate.strip(), "exact")
    return Score(False, final_segment(answer).strip() or None, "exact")


def score_contains(answer: str, gold: str) -> Score:
    """Right when the normalized gold appears as whole words in the normalized answer."""
    expected = normalize(parse_gold(gold))
    text = normalize(answer)
    found = bool(expected) and re.search(rf"(?<!\w){re.escape(expected)}(?!\w)", text) is not None
    return Score(found, expected if found else final_segment(answer).strip() or None, "contains")


# -- choosing a scorer --------------------------------------------------------------------------


def infer_scorer(gold: str) -> Scorer:
    """The scorer a gold answer calls for: a number, a choice letter or yes/no, else contains."""
    gold = parse_gold(gold)
    if _LETTER_GOLD.match(gold) or normalize(gold) in _YES_NO:
        return "choice"
    plain = re.sub(r"[$€£%\s]", "", gold)
    found = numbers(gold)
    if found and (
        re.fullmatch(r"-?[\d,]*\.?\d+(?:/\d+)?", plain) or normalize(gold) == found[0][1].lower()
    ):
        return "number"
    return "contains"


_SCORE = {
    "exact": score_exact,
    "number": score_number,
    "contains": score_contains,
    "choice": score_choice,
}


def score(answer: str | None, gold: str, scorer: Scorer | None = None) -> Score:
    """Score `answer` against `gold` with `scorer` (inferred from the gold when None)."""
    chosen = scorer or infer_scorer(gold)
    if answer is None or not answer.strip():
        return Score(False, None, chosen)
    return _SCORE[chosen](answer, gold)
