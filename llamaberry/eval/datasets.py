"""Datasets: JSONL or CSV records (or a built-in set) read into items with their gold
answers and scorers; fields picked by name, multiple choice lettered, and a reproducible sample."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from llamaberry.core.errors import InputError
from llamaberry.core.scoring import SCORERS, Scorer, infer_scorer, parse_gold, score

BUILTIN = ("tricky",)


class Item(BaseModel):
    """One dataset record: the question, its gold answer and the scorer that checks it."""

    index: int
    question: str
    answer: str
    scorer: Scorer
    occurrence: int = 0


class Dataset(BaseModel):
    """A named list of items, and a line for each record that was skipped as unusable."""

    name: str
    items: list[Item]
    skipped: list[str] = []


class Fields(BaseModel):
    """Which fields of a record hold the question, the gold answer and (optionally) the choices:
    one field holding a list, or several fields holding one choice each ("A,B,C,D")."""

    question: str = "question"
    answer: str = "answer"
    choices: list[str] = []


def load_dataset(
    source: str | Path, *, builtin: bool = False, fields: Fields | None = None
) -> Dataset:
    """Read a JSONL or CSV dataset (or a built-in one by name). A line that cannot be used is
    reported in `skipped` with its number and left out; `InputError` when none can be used."""
    fields = fields or Fields()
    if builtin:
        if source not in BUILTIN:
            raise InputError(f"No built-in dataset '{source}'; there is: {', '.join(BUILTIN)}.")
        text = resources.files("llamaberry").joinpath(f"data/{source}.jsonl").read_text("utf-8")
        name, csv_file = str(source), False
    else:
        path = Path(source)
        try:
            text = path.read_text("utf-8-sig")  # a spreadsheet's CSV often starts with a BOM
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"Cannot read the dataset {path}: {error}") from None
        name, csv_file = path.stem, path.suffix.lower() == ".csv"
    items: list[Item] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    for number, record in _csv_records(name, text) if csv_file else _jsonl_records(name, text):
        try:
            if isinstance(record, InputError):
                raise record
            items.append(_item(name, number, record, len(items), seen, fields))
        except InputError as error:
            skipped.append(str(error))
    if not items:
        first = f" ({skipped[0]})" if skipped else ""
        raise InputError(f"The dataset {name} has no usable records{first}.")
    return Dataset(name=name, items=items, skipped=skipped)


def _jsonl_records(name: str, text: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield number, InputError(f"{where} is not JSON: {error.msg}.")
        except RecursionError:
            yield number, InputError(f"{where} is nested too deeply to read.")
        except ValueError as error:  # an integer longer than Python converts (4,300 digits)
            yield number, InputError(f"{where} cannot be read: {error}.")


def _csv_records(name: str, text: str) -> Iterator[tuple[int, object]]:
    """Rows as dicts by header, each with the line it starts on (a quoted field may span lines)."""
    import csv
    import io

    csv.field_size_limit(10_000_000)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    start = 2
    try:
        for row in reader:
            if None in row:  # more cells than the header names
                yield start, InputError(f"{name} line {start} has more cells than the header.")
            elif any((value or "").strip() for value in row.values()):
                yield start, dict(row)
            start = reader.line_num + 1
    except csv.Error as error:
        yield reader.line_num, InputError(f"{name} line {reader.line_num} is not CSV: {error}.")


def _letter(index: int) -> str:
    return "ABCDEFGHIJ"[index]


def _with_choices(where: str, record: dict, question: str, answer: object, fields: Fields):
    """The question with its choices lettered, and the gold as the right choice's letter."""
    names = fields.choices
    if len(names) == 1:
        value = record.get(names[0])
        if isinstance(value, str):
            try:
                value = json.loads(value)  # a CSV cell holding a JSON list
            except ValueError:
                value = [part.strip() for part in value.split("|")]
        choices = value
    else:
        choices = [record.get(field) for field in names]
    if not isinstance(choices, list) or not 2 <= len(choices) <= 10:
        raise InputError(f'{where}: "{"/".join(names)}" must hold 2 to 10 choices.')
    choices = [str(c).strip() for c in choices if c is not None and str(c).strip()]
    if len(choices) < 2:
        raise InputError(f'{where}: "{"/".join(names)}" must hold 2 to 10 choices.')
    gold = str(answer).strip() if answer is not None else ""
    letters = [_letter(i) for i in range(len(choices))]
    if gold.strip("()").upper() in letters and len(gold.strip("()")) == 1:
        letter = gold.strip("()").upper()
    elif re.fullmatch(r"\d+", gold) and int(gold) < len(choices):
        letter = _letter(int(gold))  # a 0-based index, as many benchmark exports give it
    elif gold.casefold() in [c.casefold() for c in choices]:
        letter = _letter([c.casefold() for c in choices].index(gold.casefold()))
    else:
        raise InputError(f"{where}: the answer {gold[:40]!r} is not one of the choices.")
    listing = "\n".join(f"{_letter(i)}. {choice}" for i, choice in enumerate(choices))
    prompt = f"{question.strip()}\n\n{listing}\n\nAnswer with the letter of the right choice."
    return prompt, letter


def _item(
    name: str,
    number: int,
    record: object,
    index: int,
    seen: dict[str, int],
    fields: Fields,
) -> Item:
    where = f"{name} line {number}"
    if not isinstance(record, dict):
        raise InputError(f"{where} must be a JSON object.")
    question, answer = record.get(fields.question), record.get(fields.answer)
    if not isinstance(question, str) or not question.strip():
        raise InputError(f'{where} needs a "{fields.question}" string.')
    scorer = record.get("scorer")
    if fields.choices:
        question, answer = _with_choices(where, record, question, answer, fields)
        scorer = "choice"
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not parse_gold(answer):
        raise InputError(f'{where} needs an "{fields.answer}" string.')
    scorer = scorer or infer_scorer(answer)
    if scorer not in SCORERS:
        raise InputError(f"{where}: unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}.")
    try:
        score(parse_gold(answer), answer, scorer)  # a gold its scorer cannot read is a bad line
    except ValueError as error:
        raise InputError(f"{where}: {error}.") from None
    occurrence = seen.get(question, 0)
    seen[question] = occurrence + 1
    return Item(index=index, question=question, answer=answer, scorer=scorer, occurrence=occurrence)


def sample(dataset: Dataset, k: int, seed: int = 0) -> Dataset:
    """A reproducible random subset of `k` items (all when k >= the size), in dataset order."""
    import random

    if k < 1:
        raise InputError(f"--sample must be at least 1 (got {k}).")
    if k >= len(dataset.items):
        return dataset
    chosen = sorted(random.Random(seed).sample(range(len(dataset.items)), k))
    return dataset.model_copy(update={"items": [dataset.items[i] for i in chosen]})
