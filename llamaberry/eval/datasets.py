"""Datasets: records (JSONL, a JSON array, CSV, TSV, or a built-in set) read into items with
their gold answers and scorers; fields picked by name or by a benchmark's preset (or detected
from the field names), multiple choice lettered, and a reproducible sample."""

from __future__ import annotations

import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from llamaberry.core.errors import InputError
from llamaberry.core.scoring import (
    SCORERS,
    Scorer,
    infer_scorer,
    last_boxed,
    parse_gold,
    score,
)
from llamaberry.eval.formats import PRESETS, Fields, describe, detect, records

BUILTIN = ("tricky",)

__all__ = ["BUILTIN", "PRESETS", "Dataset", "Fields", "Item", "load_dataset", "sample"]


class Item(BaseModel):
    """One dataset record: the question, its gold answer (and other acceptable ones, such as
    TriviaQA's aliases) and the scorer that checks it."""

    index: int
    question: str
    answer: str
    scorer: Scorer
    occurrence: int = 0
    aliases: list[str] = []


class Dataset(BaseModel):
    """A named list of items, a line for each record that was skipped as unusable, what was
    detected about its format, and where it came from (its path and content hash)."""

    name: str
    items: list[Item]
    skipped: list[str] = []
    detected: str | None = None
    path: str | None = None
    sha256: str | None = None
    # The file's item count when these items are a --sample of it.
    drawn_from: int | None = None


def load_dataset(
    source: str | Path,
    *,
    builtin: bool = False,
    fields: Fields | None = None,
    preset: str | None = None,
) -> Dataset:
    """Read a dataset: JSON lines, a JSON array, CSV or TSV (or a built-in one by name). With
    `preset` the fields are the benchmark's; with neither a preset nor `fields`, the first
    record's field names pick a preset where they match one (said in `detected`). A record that
    cannot be used is reported in `skipped` with its place and left out; `InputError` when none
    can be used."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"No preset '{preset}'; there is: {', '.join(PRESETS)}.")
    if builtin:
        if source not in BUILTIN:
            raise InputError(f"No built-in dataset '{source}'; there is: {', '.join(BUILTIN)}.")
        text = resources.files("llamaberry").joinpath(f"data/{source}.jsonl").read_text("utf-8")
        name, suffix, where = str(source), ".jsonl", None
    else:
        path = Path(source)
        try:
            text = path.read_text("utf-8-sig")  # a spreadsheet's CSV often starts with a BOM
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"Cannot read the dataset {path}: {error}") from None
        name, suffix, where = path.stem, path.suffix.lower(), str(path)
    found = list(records(name, text, suffix, preset))
    chosen, detected = _fields_for(found, fields, preset)
    dataset = _items(name, found, chosen)
    dataset.detected, dataset.path = detected, where
    dataset.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return dataset


def _fields_for(
    found: list[tuple[str, object]], fields: Fields | None, preset: str | None
) -> tuple[Fields, str | None]:
    """The fields to read: the preset's, the caller's, else those the first record calls for."""
    first = next((record for _, record in found if isinstance(record, dict)), None)
    auto = detect(first)
    if preset is not None:
        # The preset's fields, adjusted where the file shows how (MMLU's A,B,C,D columns).
        return (auto[1] if auto is not None and auto[0] == preset else PRESETS[preset][1]), None
    if fields is not None and fields != Fields():
        return fields, None
    if auto is None:
        return Fields(), None
    return auto[1], describe(*auto)


def _items(name: str, found: list[tuple[str, object]], fields: Fields) -> Dataset:
    items: list[Item] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    for where, record in found:
        try:
            if isinstance(record, InputError):
                raise record
            items.append(_item(where, record, len(items), seen, fields))
        except InputError as error:
            skipped.append(str(error))
    if not items:
        first = f" ({skipped[0]})" if skipped else ""
        raise InputError(f"The dataset {name} has no usable records{first}.")
    return Dataset(name=name, items=items, skipped=skipped)


def _letter(index: int) -> str:
    return "ABCDEFGHIJ"[index]


def _choice_list(where: str, record: dict, fields: Fields) -> tuple[list[object], list[str]]:
    """The choices' texts and their labels (ARC's "A".."D" or "1".."4"; empty when none)."""
    names = fields.choices
    if len(names) > 1:
        return [record.get(field) for field in names], []
    value = record.get(names[0])
    question = record.get(fields.question)
    if value is None and isinstance(question, dict):
        value = question.get("choices")  # ARC's original files: {"stem", "choices"}
    if isinstance(value, str):
        try:
            value = json.loads(value)  # a CSV cell holding a JSON list
        except ValueError:
            value = [part.strip() for part in value.split("|")]
    if isinstance(value, dict) and isinstance(value.get("text"), list):
        labels = value.get("label")
        return value["text"], [str(x) for x in labels] if isinstance(labels, list) else []
    if isinstance(value, list) and value and all(isinstance(c, dict) for c in value):
        return [c.get("text") for c in value], [str(c.get("label", "")) for c in value]
    if not isinstance(value, list):
        raise InputError(f'{where}: "{names[0]}" must hold 2 to 10 choices.')
    return value, []


def _gold_letter(where: str, gold: str, choices: list[str], labels: list[str]) -> str:
    """The letter of the right choice, from a label ("3" in ARC), a letter, a 0-based index or
    the choice's own text."""
    bare = gold.strip("()").upper()
    if gold and gold in labels:
        return _letter(labels.index(gold))  # ARC's numeric keys: "3" is the third choice
    if len(bare) == 1 and bare in [_letter(i) for i in range(len(choices))]:
        return bare
    if re.fullmatch(r"\d+", gold) and int(gold) < len(choices):
        return _letter(int(gold))  # a 0-based index, as many benchmark exports give it
    folded = [c.casefold() for c in choices]
    if gold.casefold() in folded:
        return _letter(folded.index(gold.casefold()))
    raise InputError(f"{where}: the answer {gold[:40]!r} is not one of the choices.")


def _with_choices(
    where: str, record: dict, question: str, answer: object, fields: Fields
) -> tuple[str, str]:
    """The question with its choices lettered, and the gold as the right choice's letter."""
    shown = "/".join(fields.choices)
    texts, labels = _choice_list(where, record, fields)
    if not 2 <= len(texts) <= 10:
        raise InputError(f'{where}: "{shown}" must hold 2 to 10 choices.')
    kept = [
        (str(c).strip(), labels[i] if i < len(labels) else "")
        for i, c in enumerate(texts)
        if c is not None and str(c).strip()
    ]
    if len(kept) < 2:
        raise InputError(f'{where}: "{shown}" must hold 2 to 10 choices.')
    choices = [text for text, _ in kept]
    gold = str(answer).strip() if answer is not None else ""
    letter = _gold_letter(where, gold, choices, [label for _, label in kept if label])
    listing = "\n".join(f"{_letter(i)}. {choice}" for i, choice in enumerate(choices))
    prompt = f"{question.strip()}\n\n{listing}\n\nAnswer with the letter of the right choice."
    return prompt, letter


def _gold(where: str, answer: object, record: dict, fields: Fields) -> tuple[object, list[str]]:
    """The gold in the form the scorers read, and its aliases: true/false as yes/no, a list's
    first entry (the rest aliases), TriviaQA's {value, aliases}, a solution's last \\boxed{}."""
    if answer is None and fields.solution:
        answer = record.get(fields.solution)
    if isinstance(answer, bool):
        return ("yes" if answer else "no"), []
    if isinstance(answer, float) and not math.isfinite(answer):
        raise InputError(f'{where}: the "{fields.answer}" {answer} is not a usable answer.')
    if isinstance(answer, dict) and ("value" in answer or "aliases" in answer):
        aliases = [str(a) for a in answer.get("aliases") or [] if str(a).strip()]
        value = answer.get("value") or (aliases[0] if aliases else None)
        return value, [a for a in aliases if a != value]
    if isinstance(answer, list):
        golds = [str(a) for a in answer if a is not None and str(a).strip()]
        return (golds[0] if golds else None), golds[1:]
    if isinstance(answer, str) and "\\boxed" in answer:
        return last_boxed(answer) or answer, []
    return answer, []


def _question(where: str, record: dict, fields: Fields) -> str:
    """The question (after BoolQ's passage where there is one)."""
    question = record.get(fields.question)
    if isinstance(question, dict):
        question = question.get("stem")  # ARC's original files
    if not isinstance(question, str) or not question.strip():
        hint = ""
        if fields.question not in record:
            have = ", ".join(str(k) for k in list(record)[:8])
            hint = (
                f" (its fields: {have}; name the question's with --question-field, or use "
                f"--preset {'|'.join(PRESETS)})"
            )
        raise InputError(f'{where} needs a "{fields.question}" string{hint}.')
    context = record.get(fields.context) if fields.context else None
    if isinstance(context, str) and context.strip():
        return f"{context.strip()}\n\n{question.strip()}"
    return question


def _item(where: str, record: object, index: int, seen: dict[str, int], fields: Fields) -> Item:
    if not isinstance(record, dict):
        raise InputError(f"{where} must be a JSON object.")
    question = _question(where, record, fields)
    answer, aliases = _gold(where, record.get(fields.answer), record, fields)
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
    if scorer == "choice" and not _shows_choices(question, answer):
        raise InputError(
            f"{where}: the answer {answer!r} is a choice letter but the question shows no "
            "choices; name their field with --choices-field (or use --preset mmlu or arc)."
        )
    try:
        score(parse_gold(answer), answer, scorer)  # a gold its scorer cannot read is a bad line
    except ValueError as error:
        raise InputError(f"{where}: {error}.") from None
    occurrence = seen.get(question, 0)
    seen[question] = occurrence + 1
    return Item(
        index=index,
        question=question,
        answer=answer,
        scorer=scorer,
        occurrence=occurrence,
        aliases=aliases,
    )


def _shows_choices(question: str, answer: str) -> bool:
    """False when the gold is a choice letter and the question lists no choice by it: such an
    item would run as a free-text question."""
    letter = parse_gold(answer).strip("() .").upper()
    if not re.fullmatch(r"[A-J]", letter):
        return True  # yes/no
    return bool(re.search(rf"(?:^|\s)\(?{letter}[).:]\s", question, re.MULTILINE))


def sample(dataset: Dataset, k: int, seed: int = 0) -> Dataset:
    """A reproducible random subset of `k` items (all when k >= the size), in dataset order."""
    import random

    if k < 1:
        raise InputError(f"--sample must be at least 1 (got {k}).")
    if k >= len(dataset.items):
        return dataset
    chosen = sorted(random.Random(seed).sample(range(len(dataset.items)), k))
    items = [dataset.items[i] for i in chosen]
    return dataset.model_copy(update={"items": items, "drawn_from": len(dataset.items)})
