"""Scoring a model's answer against a known one: exact, number, contains and choice.

Answers come back as sentences ("There are three r's in strawberry."), so each scorer first
pulls the final answer out of the text, then compares. Every scorer returns what it extracted,
so a wrong score can be checked by eye in the per-item results.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Scorer = Literal["exact", "number", "contains", "choice", "math"]
SCORERS: tuple[Scorer, ...] = ("exact", "number", "contains", "choice", "math")


@dataclass(frozen=True)
class Score:
    """The verdict on one answer: right or not, and what was read as the answer."""

    correct: bool
    predicted: str | None
    scorer: Scorer

    @property
    def unreadable(self) -> bool:
        """True when no answer could be read out of the reply at all: the reply's format failed,
        which says nothing yet about whether the model knew the answer."""
        return self.predicted is None


# -- reading the final answer out of a reply ----------------------------------------------------
#
# Where a reply keeps its answer, most trusted first: an answer section ("## Answer",
# "**Final Answer:**"), a \boxed{} or "####", an "answer is" sentence, a bold span that is not a
# label, and last the end of the reply. Among several of a kind the last one wins: a model that
# states an answer twice corrects itself in the second. Labels (`**Explanation:**`, `**Step 2:**`)
# are never read as answers.

_ANSWER_HEADING = re.compile(
    r"^[ \t]{0,3}(?:#{1,6}[ \t]*)?(?P<open>\*\*|__)?[ \t]*(?:\d+[.)][ \t]*)?"
    r"(?P<title>(?:[A-Za-z-]+[ \t]+){0,2}answer)[ \t]*(?:\([^)\n]*\))?[ \t]*"
    r"(?P<colon1>:)?[ \t]*(?:\*\*|__)?[ \t]*(?P<colon2>:)?[ \t]*(?P<rest>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
_ANY_HEADING = re.compile(
    r"^[ \t]{0,3}(?:#{1,6}[ \t]|(?:\*\*|__)[^*_\n]+(?:\*\*|__)[ \t]*:?[ \t]*$)"
)
_MARKER = re.compile(
    r"(?:####|\b(?:final\s+|correct\s+|short\s+|concise\s+)?answer\s*"
    r"(?:is\b|(?:would|must|should|will|has\s+to|ought\s+to)\s+be\b|:|=)"
    r"|\b(?:correct|right|best)\s+(?:option|choice|letter|response)\s+(?:is\b|would\s+be\b|:)"
    r"|answer\s+to\s+(?:the|this|your)\s+question\s+is)[\s*:_]*",
    re.IGNORECASE,
)
# A closing courtesy is never the answer: "I hope this helps with your 2 questions!"
_PLEASANTRY = re.compile(
    r"^[\s*_>]*(?:i\s+hope\b|hope\s+(?:this|that)\b|let\s+me\s+know\b|feel\s+free\b"
    r"|if\s+you\s+have\s+(?:any\s+)?(?:more|other|further)\b|good\s+luck\b|happy\s+to\s+help\b"
    r"|glad\s+(?:I|to)\b|thanks?\b|thank\s+you\b)",
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*(?P<a>[^*\n]+?)\*\*(?P<after>:?)|__(?P<b>[^_\n]+?)__(?P<after2>:?)")
_LABEL_WORDS = re.compile(
    r"^(?:step|turn|part|stage|phase|case|check|method|approach)\s*\d*\b"
    r"|^(?:explanation|reasoning|critique|analysis|note|notes|verification|solution|summary"
    r"|answer|final answer|conclusion|result|why|given|problem|question|thinking)$",
    re.IGNORECASE,
)


def _is_label(text: str, after: str) -> bool:
    """True for a bold span that names what follows rather than saying anything itself."""
    stripped = text.strip()
    if after or stripped.endswith(":"):
        return True
    return bool(_LABEL_WORDS.match(stripped.rstrip(".").strip()))


def _bold_spans(text: str) -> list[str]:
    """The bold spans of `text` that are not labels, in order."""
    spans = []
    for match in _BOLD.finditer(text):
        inner = match.group("a") or match.group("b")
        if not _is_label(inner, match.group("after") or match.group("after2") or ""):
            spans.append(inner)
    return spans


def _strip_labels(text: str) -> str:
    """`text` without its bold labels, list numbering and headings."""

    def drop(match: re.Match[str]) -> str:
        inner = match.group("a") or match.group("b")
        keep = not _is_label(inner, match.group("after") or match.group("after2") or "")
        return match.group() if keep else " "

    text = _BOLD.sub(drop, text)
    lines = []
    for line in text.splitlines():
        if re.match(r"^\s{0,3}#{1,6}\s", line):
            continue
        lines.append(
            re.sub(r"^\s*(?:[-*+>]\s+|\d+[.)]\s+|step\s+\d+\s*[.:)]\s*)", "", line, flags=re.I)
        )
    return "\n".join(lines)


def _boxed(text: str) -> list[str]:
    """The contents of every \\boxed{...} (braces balanced), in order."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for position in range(start, min(len(text), start + 2000)):
            char = text[position]
            depth += char == "{"
            depth -= char == "}"
            if depth == 0:
                found.append(text[start:position])
                break
    return found


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{} in `text` (a MATH solution's answer), or None."""
    found = _boxed(text)
    return found[-1].strip() if found else None


def _answer_heading(line: str) -> str | None:
    """What follows an answer heading on its own line ('' if nothing), or None for any other
    line: '## Final Answer', '**Answer:** 3', 'Answer: 3' are headings; 'The answer' is not."""
    match = _ANSWER_HEADING.match(line)
    if not match:
        return None
    rest = match.group("rest")
    hashes = line.lstrip().startswith("#")
    colon = match.group("colon1") or match.group("colon2")
    closed = match.group("open") and re.search(r"answer[^\n]*?(?:\*\*|__)", line, re.I)
    if not (hashes or closed or colon):
        return None  # "answer" in a sentence
    if not (hashes or colon) and rest.strip():
        return None  # bold words that open a sentence
    return rest


def _answer_sections(text: str) -> list[str]:
    """The body of every answer section, in order: from its heading to the next heading."""
    bodies = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        rest = _answer_heading(line)
        if rest is None:
            continue
        body = [rest]
        for following in lines[number + 1 :]:
            if _ANY_HEADING.match(following) or _answer_heading(following) is not None:
                break
            body.append(following)
        joined = "\n".join(body).strip()
        if joined:
            bodies.append(joined)
    return bodies


def _without_pleasantries(text: str) -> str:
    """`text` without the courtesy lines that close it ("Let me know if ...")."""
    lines = text.rstrip().splitlines()
    while lines and (not lines[-1].strip() or _PLEASANTRY.match(lines[-1])):
        lines.pop()
    if lines:  # a courtesy sentence on the answer's own line
        parts = re.split(r"(?<=[.!?])\s+", lines[-1])
        while len(parts) > 1 and _PLEASANTRY.match(parts[-1]):
            parts.pop()
        lines[-1] = " ".join(parts)
    return "\n".join(lines)


def _candidates(text: str) -> list[tuple[str, bool]]:
    """Where the answer may be, most trusted first, each with whether it is the reply's end
    (read from its last sentence) rather than a place an answer is announced (its first).
    A bold span counts only near the end: an intermediate figure set in bold earlier in the
    working does not outrank the closing sentence."""
    text = _without_pleasantries(text)
    found: list[tuple[str, bool]] = []
    sections = _answer_sections(text)
    if sections:
        found.append((sections[-1], False))
    boxed = _boxed(text)
    if boxed:
        found.append((boxed[-1], False))
    for marker in reversed(list(_MARKER.finditer(text))):
        tail = text[marker.end() :].strip()
        if tail:
            found.append((tail.splitlines()[0], False))
            break
    lines = [line for line in _strip_labels(text).splitlines() if line.strip()]
    bolds = _bold_spans("\n".join(lines[-2:]))
    if bolds:
        found.append((bolds[-1], False))
    found.extend((line, True) for line in reversed(lines[-3:]))
    return found


def answer_segments(text: str) -> list[str]:
    """The places in a reply that may hold its answer, most trusted first (see above)."""
    return [segment for segment, _ in _candidates(text)]


def final_segment(text: str) -> str:
    """The part of a reply most likely to hold its answer (the first of `answer_segments`)."""
    segments = answer_segments(text)
    return segments[0] if segments else ""


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
# A minus sign is a sign only where no number stands just before it ("3 - 10" subtracts).
_NUMBER = re.compile(
    r"(?<![\w.])(?P<digits>(?:(?<![\d)]\s)-)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d{1,4}(?![\d.,]*\w)|/\d+)?)"
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


# Number forms rewritten to plain digits before reading: minus signs other than '-', a sign in
# front of a currency ("-$5"), and powers of ten ("3 × 10^8", "6.02 \times 10^{23}").
_MINUS = re.compile(r"[\u2212\u2012\u2013\ufe63\uff0d](?=\s?[$€£]?\d)")
_SIGNED_MONEY = re.compile(r"(?<![\w.])-\s?(?:\\?[$€£])\s?(?=\d)|(?<![\w.])[$€£]\s?-(?=\d)")
_POWER_OF_TEN = re.compile(
    r"(?P<m>\d+(?:\.\d+)?)\s*(?:×|x|\*|·|\\times|\\cdot)\s*10\s*(?:\^|\*\*)\s*"
    r"(?:\{\s*(?P<e1>[-+]?\d{1,4})\s*\}|(?P<e2>[-+]?\d{1,4}))"
)


def plain_numbers(text: str) -> str:
    """`text` with signs and powers of ten spelt as plain digits ("−7" -> "-7", "-$5" -> "-5",
    "3 × 10^8" -> "3e8"), so that a number is read whole."""
    text = _MINUS.sub("-", text)
    text = _SIGNED_MONEY.sub("-", text)
    return _POWER_OF_TEN.sub(lambda m: f"{m['m']}e{m['e1'] or m['e2']}", text)


_PRONOUN_ONE = re.compile(
    r"\b(?:this|that|the|which|each|any|every|no|some|another|other|right|wrong|correct|first"
    r"|last|next|same|only)\s+$",
    re.IGNORECASE,
)


def numbers(text: str) -> list[tuple[Fraction, str]]:
    """Every number in `text`, in order, as (value, how it was written): digits, decimals,
    fractions, thousands separators, powers of ten, signs and number words ("twenty-one",
    "twice")."""
    found = []
    text = plain_numbers(_delatex(text))
    for match in _NUMBER.finditer(text):
        written = match.group()
        if match.group("words"):
            if written.lower() == "one" and _PRONOUN_ONE.search(text[: match.start()]):
                continue  # "this one", "the right one": a pronoun, not a count
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


def _mixed(match: re.Match[str]) -> str:
    whole, top, bottom = (int(match[i]) for i in (1, 2, 3))
    if bottom == 0:
        return match.group()
    value = Fraction(whole) + Fraction(top, bottom)
    return f" {value.numerator}/{value.denominator}" if value.denominator != 1 else str(value)


_LATEX = (
    # 3\frac{1}{2} is three and a half, not 31/2; \frac34 is 3/4.
    (re.compile(r"(?<![\d.])(\d+)\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"), _mixed),
    (re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)"), r"\1/\2"),
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"\1/\2"),
    (re.compile(r"(?<=\d),\s*\\[!,;: ]\s*(?=\d{3})"), ","),
    (re.compile(r"\\(?:text|mathrm|mathbf|textbf|boxed|fbox)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[$%]"), lambda m: m.group()[1]),
    (re.compile(r"\\[,;!: ]|\\(?:left|right|quad|qquad)\b|\\[()\[\]]"), " "),
    (re.compile(r"\\(?:times|cdot)\b"), "×"),
    (re.compile(r"\\approx\b"), "≈"),
)
# Words after which a sentence states its result: "adding 48 and 24 gives 72".
_RESULT_WORD = re.compile(
    r"\b(?:gives?|giving|gets?|got|makes?|equals?|equal\s+to|comes?\s+to|totals?|total\s+of"
    r"|yields?|leaves?|leaving|results?\s+in|so|therefore|thus|hence)\b|[=≈]"
    r"|\b(?:is|are|was|were)(?=\s+(?:about\s+|around\s+|exactly\s+|now\s+|at\s+)?[-$€£]?\d)",
    re.IGNORECASE,
)
# A number the sentence rules out: "It is not 5, but 6." / "not 10 but 12".
_RULED_OUT = re.compile(
    r"\b(?:not|n't|never|rather\s+than|instead\s+of)\s+(?:[a-z]+\s+){0,2}?"
    r"(?:[$€£]\s?)?-?\d[\d,./]*(?:\s?%)?",
    re.IGNORECASE,
)
# A sum announced as such: "2 apples and 3 oranges, 5 fruits in total" / "a total of 5".
_TOTAL = re.compile(
    r"(?P<before>-?\d[\d,./]*)(?:\s+[a-z]+){0,2}\s+(?:in\s+total|in\s+all|altogether|overall)\b"
    r"|\b(?:total(?:\s+of|\s+is)?|in\s+all|altogether)[\s:,]+(?:[a-z]+\s+){0,2}?"
    r"(?P<after>-?\d[\d,./]*)(?![\d,./]*\s*[-+*/×÷=])",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Z*(\[])|\n+")


def _delatex(text: str) -> str:
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)  # type: ignore[arg-type]
    return text


def _number_in_sentence(sentence: str) -> tuple[Fraction, str] | None:
    """The number a sentence concludes with: a sum it announces as the total, else the first
    after its last '=' or result word, else its first; numbers it rules out ("not 5") left out."""
    sentence = _RULED_OUT.sub(" ", plain_numbers(sentence))
    total = list(_TOTAL.finditer(sentence))
    if total:
        found = numbers(total[-1]["before"] or total[-1]["after"])
        if found:
            return found[0]
    for text in (re.sub(r"\([^()]*\)", " ", sentence), sentence):  # asides last
        found = numbers(text)
        if not found:
            continue
        for word in reversed(list(_RESULT_WORD.finditer(text))):
            after = numbers(text[word.end() :])
            if after:
                return after[0]
        return found[0]
    return None


def _number_in(segment: str, *, from_end: bool) -> tuple[Fraction, str] | None:
    """The number a segment gives as its answer: a bold number first, then its first sentence
    that holds a number (its last one when read from the end of a reply)."""
    segment = _delatex(segment)
    for span in _bold_spans(segment):
        found = numbers(span)
        if found:
            return found[0]
    sentences = [s for s in _SENTENCE_END.split(_strip_labels(segment)) if numbers(s)]
    if not sentences:
        return None
    return _number_in_sentence(sentences[-1] if from_end else sentences[0])


def read_number(answer: str) -> tuple[Fraction, str] | None:
    """The number a reply gives as its answer (see `answer_segments`), or None."""
    for segment, at_end in _candidates(answer):
        found = _number_in(segment, from_end=at_end)
        if found:
            return found
    # Nowhere an answer usually sits: the last number of the reply, labels left out.
    anywhere = numbers(_delatex(_strip_labels(_without_pleasantries(answer))))
    return anywhere[-1] if anywhere else None


def score_number(answer: str, gold: str) -> Score:
    """Right when the answer's number equals the gold's (0.9 == .9, 3 == three, 1,000 == 1000)."""
    gold_numbers = numbers(parse_gold(gold))
    if not gold_numbers:
        raise ValueError(f"gold answer {gold!r} holds no number")
    target = gold_numbers[0][0]
    found = read_number(answer)
    if found is None:
        return Score(False, None, "number")
    value, written = found
    return Score(_same_number(value, target), written, "number")


# -- choices ------------------------------------------------------------------------------------

_LETTER_GOLD = re.compile(r"^\(?([A-Ja-j])[).:]?$")
_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
# Upper-case letters only, except after "option": a lower-case "(a)" is usually a list marker.
# Each finds a letter the text puts forward; the last one put forward wins.
_CHOICE_PATTERNS = (
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b(?:option|choice|letter)\s+\(?([A-J])\b", re.IGNORECASE),
    re.compile(r"^\(?([A-J])[).:](?:\s|$)", re.MULTILINE),
    re.compile(
        r"(?<![\w'’])\(?([A-J])\)?\s+(?:is|must\s+be|would\s+be)\s+(?:the\s+)?"
        r"(?:correct|right|true|best|answer)\b"
    ),
    re.compile(
        r"\b(?:so|thus|therefore|hence|then)[,:]?\s+(?:it(?:'s|\s+is)\s+)?\(?([A-J])\)?"
        r"(?![\w'’-]|\s+[a-z])",
        re.IGNORECASE,
    ),
)
# A letter the text rules out is not its choice: "Option A is incorrect", "(B) ignores friction".
_RULED_OUT_CHOICE = re.compile(
    r"(?:\b(?:option|choice)\s+)?\(?\b[A-J]\b\)?\s+(?:(?:is|are|was|seems|looks|sounds)\s+)?"
    r"(?:(?:also|clearly|definitely|obviously|simply|likewise)\s+)?"
    r"(?:wrong|incorrect|false|out|not\b|tempting|possible|plausible|ruled\s+out|eliminated"
    r"|a\s+distractor|ignores|fails|misses|can't|cannot|doesn't|does\s+not)"
    r"|\b(?:not|eliminate|rule\s+out|rules\s+out|except)\s+(?:option\s+)?\(?[A-J]\b\)?"
)


def _choice_of(text: str, *, leading: bool = False) -> str | None:
    """A choice letter or yes/no read from a short answer segment; with `leading`, a capital
    letter that opens the segment counts too ("C, because ...")."""
    stripped = normalize(text)
    bare = _LETTER_GOLD.match(stripped.upper()) if len(stripped) <= 3 else None
    if bare:
        return bare.group(1).upper()
    opening = (
        re.match(r"^[\s*_$(]*([A-J])\b(?![\'’-])[)*_]*(?:[\s.,:;]|$)", text) if leading else None
    )
    if opening and not re.match(r"^[\s*_$(]*(?:A|I)\s+[a-z]", text):
        return opening.group(1)
    kept = _RULED_OUT_CHOICE.sub(" ", text.strip())
    put_forward = [(m.start(1), m.group(1)) for p in _CHOICE_PATTERNS for m in p.finditer(kept)]
    if put_forward:
        return max(put_forward)[1].upper()
    return _yes_no(text)


def _yes_no(text: str) -> str | None:
    """The last yes/no (or true/false) the text states; "no" before a noun ("no evidence") is
    not an answer, and "not true" is no."""
    said = None
    for match in re.finditer(r"\b(not\s+|n't\s+)?(yes|no|true|false)\b", text, re.IGNORECASE):
        word = match.group(2).lower()
        if word == "no" and re.match(r"\s+[a-z]", text[match.end() :]):
            continue  # a determiner: "no evidence suggests otherwise"
        said = _YES_NO[word]
        if match.group(1) and word in ("true", "false"):
            said = "no" if said == "yes" else "yes"
    return said


def read_choice(answer: str) -> str | None:
    """The choice letter or yes/no a reply gives as its answer, or None."""
    for segment, at_end in _candidates(answer):
        found = _choice_of(segment, leading=not at_end)
        if found:
            return found
    lines = [line for line in _strip_labels(answer).splitlines() if line.strip()]
    return _choice_of(lines[0]) if lines else None  # "B. Because ..." answers first


def score_choice(answer: str, gold: str) -> Score:
    """Right when the chosen letter (B, (B), 'option B') or yes/no matches the gold's."""
    gold = parse_gold(gold)
    expected = _choice_of(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not a choice letter or yes/no")
    predicted = read_choice(answer)
    return Score(predicted == expected, predicted, "choice")


# -- text ---------------------------------------------------------------------------------------


def score_exact(answer: str, gold: str) -> Score:
    """Right when the answer, or the part of it that holds the answer, equals the gold once
    normalized."""
    expected = normalize(parse_gold(gold))
    segment = final_segment(answer)
    for candidate in (answer, segment, _delatex(segment)):
        if normalize(candidate) == expected:
            return Score(True, candidate.strip(), "exact")
    return Score(False, segment.strip() or None, "exact")


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# A name the reply rules out: "It's not Paris, it's Lyon." / "the Atlantic, not the Pacific".
_RULED_OUT_TEXT = re.compile(
    r"\b(?:not|n't|never|rather\s+than|instead\s+of)\s+[^,.;:!?\n]{1,60}", re.I
)


def _words(text: str) -> str:
    """Normalised as answer-matching graders do: casefolded, punctuation and articles dropped."""
    text = re.sub(r"[^\w\s]", " ", normalize(text))
    return re.sub(r"\s+", " ", _ARTICLES.sub(" ", text)).strip()


def _short_answer(answer: str) -> str:
    """The few words a reply gives as its answer: its answer section, marker or bold span."""
    return final_segment(answer).strip()


def score_contains(answer: str, gold: str, also: Sequence[str] = ()) -> Score:
    """Right when a gold (or one of its aliases in `also`) appears as whole words in the reply,
    leaving out what the reply rules out ("not Paris"); or when the reply's short answer is part
    of the gold that ends it ("Washington" for "George Washington")."""
    golds = [g for g in (_words(parse_gold(gold)), *(_words(a) for a in also)) if g]
    text = _words(_RULED_OUT_TEXT.sub(" ", _without_pleasantries(answer)))
    for expected in golds:
        if re.search(rf"(?<!\w){re.escape(expected)}(?!\w)", text):
            return Score(True, expected, "contains")
    short = _short_answer(answer)
    said = _words(_RULED_OUT_TEXT.sub(" ", short))
    for expected in golds:
        words = expected.split()
        mine = said.split()
        if mine and len(mine) <= 4 and set(mine) <= set(words) and words[-1] in mine:
            return Score(True, short, "contains")
    return Score(False, short or None, "contains")


# -- mathematical equivalence -------------------------------------------------------------------
#
# Answers to competition maths are compared by meaning (0.75 == \frac{3}{4}, x=2 == 2,
# (2, 3) == (2,3)) with Hugging Face's math-verify, imported on first use: it brings sympy, which
# costs about a second to import. Its own time limits use SIGALRM, which works only in the main
# thread, so they are off; instead, what it is given is bounded: short, and with no power or
# factorial that could take sympy minutes (2^{2^{40}}). Anything else is compared as text.

_MAX_MATH = 300
_HEAVY = re.compile(r"\\(?:sum|prod|int|lim)\b|(?:\^|\*\*)\s*\{?[^{}]*(?:\^|\*\*)|\d{5,}\s*!")


def _safe_for_sympy(text: str) -> bool:
    """True when `text` is small and holds no power tower, large exponent or factorial."""
    if len(text) > _MAX_MATH or _HEAVY.search(text):
        return False
    for exponent in re.findall(r"(?:\^|\*\*)\s*\{?\s*[-+]?(\d+)", text):
        if int(exponent) > 400:
            return False
    return all(int(n) <= 1000 for n in re.findall(r"(\d+)\s*!", text))


def _math_gold(gold: str) -> str:
    """The gold as LaTeX for math-verify: "6.02e23" spelt as a power of ten."""
    gold = re.sub(r"(\d)[eE]([-+]?\d+)\b", r"\1\\times 10^{\2}", gold.strip())
    return gold if gold.startswith("$") else f"${gold}$"


def _math_answer(answer: str) -> str | None:
    """The part of a reply that holds its mathematical answer: its last \\boxed{}, else its
    answer section or marker, else its last line."""
    boxed = _boxed(answer)
    if boxed:
        return boxed[-1].strip() or None
    segment = final_segment(answer).strip().rstrip(".")
    return segment or None


def prepare_math() -> str | None:
    """Import math-verify (and sympy) now, a second or more better spent before an eval starts
    than in the middle of its event loop; why it cannot be used, or None when it can."""
    try:
        import math_verify  # noqa: F401
    except ImportError as error:
        # latex2sympy2_extended ships parsers for antlr4 runtimes 4.9.3, 4.11 and 4.13.2 only;
        # another installed alongside (pinned by some other package) makes it refuse to load.
        return f"maths answers are compared as text only: math-verify cannot load ({error})"
    return None


def equivalent(answer: str, gold: str) -> bool:
    """True when `answer` and `gold` (LaTeX or plain) are the same mathematical object; False
    too when that cannot be told (too large to give sympy, or math-verify cannot load)."""
    if not (_safe_for_sympy(answer) and _safe_for_sympy(gold)):
        return False
    import logging

    try:
        from math_verify import parse, verify  # sympy: imported on first use only
    except ImportError:
        return False
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" notice
    wanted = parse(_math_gold(gold), parsing_timeout=None)  # type: ignore[arg-type]
    found = parse(answer if "$" in answer else f"${answer}$", parsing_timeout=None)  # type: ignore[arg-type]
    if not wanted or not found:
        return False
    return bool(verify(wanted, found, timeout_seconds=None))


def score_math(answer: str, gold: str, also: Sequence[str] = ()) -> Score:
    """Right when the reply's final expression equals the gold's mathematically (math-verify),
    or as text once normalised."""
    read = _math_answer(answer)
    if read is None:
        return Score(False, None, "math")
    for expected in (parse_gold(gold), *also):
        if _words(_delatex(read)) == _words(_delatex(expected)) or equivalent(read, expected):
            return Score(True, read, "math")
    return Score(False, read, "math")


# -- choosing a scorer --------------------------------------------------------------------------


def infer_scorer(gold: str) -> Scorer:
    """The scorer a gold answer calls for: a number, a choice letter or yes/no, mathematics
    (LaTeX, an equation, a tuple), else contains."""
    gold = parse_gold(gold)
    if _LETTER_GOLD.match(gold) or normalize(gold) in _YES_NO:
        return "choice"
    plain = re.sub(r"[$€£%\s]", "", plain_numbers(gold))
    found = numbers(gold)
    if found and (
        re.fullmatch(r"-?[\d,]*\.?\d+(?:[eE][-+]?\d+|/\d+)?", plain)
        or normalize(gold) == found[0][1].lower()
    ):
        return "number"
    if re.search(r"\\[a-zA-Z]+|[\^_{}=]|^\(.*,.*\)$|^\[.*,.*\]$|\d\s*[a-z]\b|\bsqrt\b", gold):
        return "math"
    return "contains"


_SCORE = {"exact": score_exact, "number": score_number, "choice": score_choice}


def score(
    answer: str | None, gold: str, scorer: Scorer | None = None, also: Sequence[str] = ()
) -> Score:
    """Score `answer` against `gold` with `scorer` (inferred from the gold when None); `also`
    are further acceptable golds (TriviaQA's aliases), read by the text and maths scorers."""
    chosen = scorer or infer_scorer(gold)
    if answer is None or not answer.strip():
        return Score(False, None, chosen)
    if chosen == "contains":
        return score_contains(answer, gold, also)
    if chosen == "math":
        return score_math(answer, gold, also)
    return _SCORE[chosen](answer, gold)
