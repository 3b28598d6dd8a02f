"""The shapes benchmark exports come in: named presets for the common ones, detection of a
preset from a record's field names, and the readers for JSONL, a JSON array, CSV and TSV (with
or without a header row)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

from pydantic import BaseModel

from llamaberry.core.errors import InputError


class Fields(BaseModel):
    """Which fields of a record hold the question, the gold answer and (optionally) the choices:
    one field holding a list (or ARC's {text, label}), or several fields holding one choice each
    ("A,B,C,D"). `context` is a field shown before the question (BoolQ's passage); `solution` is
    a worked solution whose last \\boxed{} is the gold where a record has no answer (MATH)."""

    question: str = "question"
    answer: str = "answer"
    choices: list[str] = []
    context: str | None = None
    solution: str | None = None


PRESETS: dict[str, tuple[str, Fields]] = {
    "gsm8k": ("GSM8K (question, answer ending in '#### N')", Fields()),
    "math": (
        "MATH (problem, answer or the solution's last \\boxed{})",
        Fields(question="problem", answer="answer", solution="solution"),
    ),
    "mmlu": (
        "MMLU-style multiple choice (question, choices, answer)",
        Fields(question="question", answer="answer", choices=["choices"]),
    ),
    "arc": (
        "ARC (question, choices {text, label}, answerKey)",
        Fields(question="question", answer="answerKey", choices=["choices"]),
    ),
    "boolq": (
        "BoolQ (passage, question, a true/false answer)",
        Fields(question="question", answer="answer", context="passage"),
    ),
    "triviaqa": (
        "TriviaQA (question, answer with aliases)",
        Fields(question="question", answer="answer"),
    ),
}

# Column sets of a CSV whose header names one choice per column.
_CHOICE_COLUMNS = (["A", "B", "C", "D"], ["a", "b", "c", "d"], ["A", "B", "C", "D", "E"])


def detect(record: object) -> tuple[str, Fields] | None:
    """The preset a record's field names call for (and the fields, adjusted for CSV choice
    columns), or None when it looks like plain question/answer records."""
    if not isinstance(record, dict):
        return None
    keys = set(record)
    answer = record.get("answer")
    if "problem" in keys and ({"solution", "answer"} & keys):
        return "math", PRESETS["math"][1]
    if "answerKey" in keys and ("choices" in keys or isinstance(record.get("question"), dict)):
        return "arc", PRESETS["arc"][1]
    for columns in _CHOICE_COLUMNS:
        if set(columns) <= keys and "question" in keys:
            return "mmlu", PRESETS["mmlu"][1].model_copy(update={"choices": columns})
    if "choices" in keys and "question" in keys:
        return "mmlu", PRESETS["mmlu"][1]
    if isinstance(answer, bool) or "passage" in keys:
        return "boolq", PRESETS["boolq"][1]
    if isinstance(answer, list) or (isinstance(answer, dict) and "aliases" in answer):
        return "triviaqa", PRESETS["triviaqa"][1]
    if isinstance(answer, str) and "####" in answer:
        return "gsm8k", PRESETS["gsm8k"][1]
    return None


def describe(preset: str, fields: Fields) -> str:
    """One line naming what was detected, and the flag that says so explicitly."""
    what = PRESETS[preset][0]
    if fields.choices and len(fields.choices) > 1:
        what = f"MMLU-style multiple choice (question, {','.join(fields.choices)}, answer)"
    return f"detected {what}; --preset {preset} says so explicitly"


# -- reading records ----------------------------------------------------------------------------

Record = tuple[str, object]  # where it is ("NAME line 3"), and the record or an InputError


def records(name: str, text: str, suffix: str, preset: str | None) -> Iterator[Record]:
    """The records of a file by its kind: a JSON array, JSON lines, CSV or TSV."""
    if suffix in (".csv", ".tsv", ".tab"):
        first = text.split("\n", 1)[0]
        tabbed = suffix != ".csv" or ("\t" in first and "," not in first)
        yield from _table_records(name, text, "\t" if tabbed else ",", preset)
    elif text.lstrip().startswith("["):
        yield from _array_records(name, text)
    else:
        yield from _jsonl_records(name, text)


def _jsonl_records(name: str, text: str) -> Iterator[Record]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        yield f"{name} line {number}", _json(f"{name} line {number}", line)


def _array_records(name: str, text: str) -> Iterator[Record]:
    whole = _json(name, text)
    if isinstance(whole, InputError):
        yield name, whole
        return
    if not isinstance(whole, list):
        yield name, InputError(f"{name} must be a JSON array of records.")
        return
    for number, record in enumerate(whole, 1):
        yield f"{name} record {number}", record


def _json(where: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        return InputError(f"{where} is not JSON: {error.msg}.")
    except RecursionError:
        return InputError(f"{where} is nested too deeply to read.")
    except ValueError as error:  # an integer longer than Python converts (4,300 digits)
        return InputError(f"{where} cannot be read: {error}.")


_KNOWN_HEADERS = {"question", "answer", "problem", "prompt", "input", "target", "label", "id"}


def _headerless(first_row: list[str], preset: str | None) -> bool:
    """True for the original MMLU CSV: no header; question, the choices, then the letter."""
    if preset not in (None, "mmlu") or len(first_row) < 4:
        return False
    if {cell.strip().casefold() for cell in first_row} & _KNOWN_HEADERS:
        return False
    return bool(re.fullmatch(r"[A-J]", first_row[-1].strip()))


def _table_records(name: str, text: str, delimiter: str, preset: str | None) -> Iterator[Record]:
    """Rows as dicts by header (or MMLU's columns when there is none), each with the line it
    starts on (a quoted field may span lines)."""
    csv.field_size_limit(10_000_000)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(rows, None)
        if header is None:
            return
        start = 2
        if _headerless(header, preset):
            choices = [chr(ord("A") + i) for i in range(len(header) - 2)]
            columns, start = ["question", *choices, "answer"], 1
            rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        else:
            columns = header
        for row in rows:
            where = f"{name} line {start}"
            if len(row) > len(columns):
                yield where, InputError(f"{where} has more cells than the header.")
            elif any(cell.strip() for cell in row):
                yield where, dict(zip(columns, row, strict=False))
            start = rows.line_num + 1
    except csv.Error as error:
        yield (
            f"{name} line {rows.line_num}",
            InputError(f"{name} line {rows.line_num} is not CSV: {error}."),
        )
