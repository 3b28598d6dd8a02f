"""Eval: a dataset of questions with known answers through several modes, scored and costed.

Each (item, mode) pair is one run, saved in the history once when it ends (off the event loop),
tagged with a key made of the question, its occurrence in the dataset, the mode, the mode's
options, every setting that changes the answer (model, provider, endpoint, temperature, token
budget, effort) and the model the endpoint really serves when that is not the asked id
(llama.cpp answers any id with its one model); a rerun of the same eval takes those runs from
the store instead of paying for them again, and re-scores them against the dataset's current
golds. Failed runs are not reused, so a rerun retries them.

An item's seconds leave out the time its calls waited in the server's queue (reported apart as
`queued_seconds`, where the server says, as llama.cpp does), so modes compare on the time they
took, not on how busy the server was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from itertools import combinations, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from llamaberry import modes as registry
from llamaberry.core.errors import InputError, RunFailedError, format_duration
from llamaberry.core.redact import redact_model
from llamaberry.core.results import Mode, ModeResult, Run
from llamaberry.core.scoring import SCORERS, Scorer, infer_scorer, parse_gold, score
from llamaberry.engine import collect

if TYPE_CHECKING:
    from llamaberry.engine import Engine
    from llamaberry.store import Store

BUILTIN = ("tricky",)
# Runs at once when neither the caller nor the endpoint says how many it can serve.
DEFAULT_CONCURRENCY = 4

# The settings that change what a run answers; a change in any of them means a fresh run.
_ANSWER_SETTINGS = (
    "provider",
    "model",
    "base_url",
    "temperature",
    "max_tokens",
    "reasoning_effort",
)


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


class StageScore(BaseModel):
    """One intermediate answer of a run scored: after turn 2, after the synthesis..."""

    stage: str
    correct: bool
    predicted: str | None


class ItemResult(BaseModel):
    """One item through one mode: the verdict, the answer read, and what it cost; `stages`
    scores every answer the run held on the way (each turn, the synthesis), at no extra call."""

    item: int
    mode: Mode
    question: str
    gold: str
    scorer: Scorer
    status: str
    correct: bool | None
    predicted: str | None
    answer: str | None
    error: str | None
    tokens: int
    seconds: float
    queued_seconds: float = 0.0
    run_id: str | None
    reused: bool
    stages: list[StageScore] = []
    # Every answer the run drew side by side (vote's samples, drafts' drafts), scored; the share
    # of them that was right; and the mode's own confidence in its answer (vote's agreement).
    samples: list[StageScore] = []
    sample_accuracy: float | None = None
    confidence: float | None = None


class StageSummary(BaseModel):
    """A mode's accuracy after one stage (turn 1, turn 2, ..., synthesis) over its scored items."""

    mode: Mode
    stage: str
    scored: int
    correct: int
    accuracy: float
    low: float
    high: float


class Flips(BaseModel):
    """How answers changed from one stage to the next, with the item ids of each kind."""

    mode: Mode
    before: str
    after: str
    right_to_wrong: list[int]
    wrong_to_right: list[int]
    wrong_to_other_wrong: list[int]


class SampleSummary(BaseModel):
    """Over a mode's scored items with side-by-side answers (vote's samples, drafts' drafts):
    how often one such answer alone was right (the share right, averaged over items), how often
    any of them was, and how often the mode's own answer (majority, synthesis) was.

    Every interval is over items, not answers: the answers to one question are not independent,
    so counting each as its own trial would overstate how much is known. A share in [0, 1] never
    varies more than a right/wrong mark with the same mean, so this errs on the wide side."""

    mode: Mode
    items: int
    answers: int
    sample_accuracy: float
    sample_low: float
    sample_high: float
    any_right: int
    any_accuracy: float
    any_low: float
    any_high: float
    correct: int
    accuracy: float
    low: float
    high: float


class ConfidenceBucket(BaseModel):
    """A mode's items whose own confidence (vote's agreement) fell in one band, and how often
    its answer was right there: a confidence worth reading rises with accuracy."""

    mode: Mode
    bucket: str
    items: int
    mean_confidence: float
    correct: int
    accuracy: float
    low: float
    high: float


class ModeSummary(BaseModel):
    """A mode's line in the report."""

    mode: Mode
    items: int
    scored: int
    correct: int
    accuracy: float | None
    low: float | None
    high: float | None
    mean_tokens: float | None
    mean_seconds: float | None
    failures: int
    reused: int
    # Accuracy points gained over the baseline (single) per 1,000 extra tokens per item.
    gain_per_1k_tokens: float | None = None


class HeadToHead(BaseModel):
    """Two modes on the items both answered: how many each got right that the other missed,
    the exact McNemar test on those, and what it means in plain words."""

    a: Mode
    b: Mode
    items: int
    a_only: int
    b_only: int
    p_value: float = 1.0
    verdict: str = ""


class Report(BaseModel):
    """The whole eval: per-item results, per-mode summaries and pairwise differences."""

    dataset: str
    model: str
    modes: list[Mode]
    results: list[ItemResult]
    summaries: list[ModeSummary]
    head_to_head: list[HeadToHead]
    stages: list[StageSummary] = []
    flips: list[Flips] = []
    samples: list[SampleSummary] = []
    confidence: list[ConfidenceBucket] = []
    # Why the eval stopped before sending every item (a long rate-limit reset), if it did.
    stopped: str | None = None
    # Things the reader must know about how it ran: the history was unusable, not saved...
    warnings: list[str] = []

    @property
    def succeeded(self) -> int:
        """How many runs finished and were scored."""
        return sum(r.correct is not None for r in self.results)


# -- datasets -----------------------------------------------------------------------------------


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


def eval_key(
    engine: Engine,
    item: Item,
    mode: Mode,
    served: str | None = None,
    options: dict | None = None,
) -> str:
    """The store tag for this item through this mode with this engine's settings and options.

    `served` is the model the endpoint really answers with; it joins the key only when it is
    not the asked id, so a single-model server that changed its model is asked afresh.
    """
    settings = engine.settings.model_dump(include=set(_ANSWER_SETTINGS), mode="json")
    if served is not None and served != settings["model"]:
        settings["served_model"] = served
    chosen = registry.options_for(mode, options or {}, engine.options)
    settings.update(chosen.model_dump(mode="json"))
    blob = json.dumps([item.question, item.occurrence, mode, settings], sort_keys=True)
    return "eval:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


# -- running ------------------------------------------------------------------------------------


async def evaluate(
    engine: Engine,
    dataset: Dataset,
    modes: Sequence[Mode] | None = None,
    *,
    concurrency: int | None = None,
    limit: int | None = None,
    store: Store | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    **options: object,
) -> Report:
    """Run every item through every mode (reusing finished runs from the store) and score them.

    `modes` defaults to the registry's default set; `options` go to the modes that take them.
    `concurrency` defaults to what the endpoint can serve at once where it says (llama.cpp's
    slots), else 4. Cancelling it (Ctrl-C) loses nothing that finished: each run is saved as
    it ends. The runs go to `store`, else the engine's history, else the default history
    unless LLAMABERRY_HISTORY=0. A history that cannot be used costs the eval its resume,
    never its report: `on_warning` is told once and the eval goes on unsaved. `modes`
    defaults to the registry's default set; `options` go to the modes that take them.
    """
    from llamaberry.store import Store, history_enabled

    chosen = registry.check(registry.default_names() if modes is None else modes)
    given = {k: v for k, v in options.items() if v is not None}
    registry.check_defaults(given)
    own = {
        mode: {k: v for k, v in given.items() if k in registry.get(mode).options.model_fields}
        for mode in chosen
    }
    if concurrency is None:
        concurrency = await default_concurrency(engine)
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1 (got {concurrency}).")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit}).")
    items = dataset.items[:limit] if limit else dataset.items
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        if on_warning is not None:
            on_warning(line)

    if store is None:
        store = engine.history or (Store() if history_enabled() else None)
        if store is None:
            warn("LLAMABERRY_HISTORY=0: runs are not saved, so this eval cannot be resumed.")
    history = _History(store, warn)
    await history.check()
    claims = _Claims.beside(history.store, warn)
    gate = asyncio.Semaphore(concurrency)
    secret = engine.settings.api_key.get_secret_value() if engine.settings.api_key else None
    served = await engine.client.resolve_model()
    limiter = getattr(engine.client, "limiter", None)
    stopped: list[str] = []

    async def one(item: Item, mode: Mode) -> ItemResult:
        key = eval_key(engine, item, mode, served, own[mode])
        while True:
            stored = await history.find(key)
            if stored is not None:
                result = _result(item, mode, stored, reused=True)
                break
            run: Run | None = None
            async with gate:
                blocked = limiter.blocked_for() if limiter is not None else 0.0
                if blocked > 0 and limiter is not None:
                    if not stopped:
                        stopped.append(
                            f"Rate limited on {limiter.blocked_limit}: stopped sending items "
                            f"(the limit resets in {format_duration(blocked)}); rerun then to "
                            "finish, what finished is kept"
                        )
                    result = _refused(item, mode, "not sent: " + stopped[0], status="skipped")
                    break
                # Another eval of the same set may be running this very item: leave it to that
                # one and come back for its run, doing other items meanwhile.
                claimed = claims.take(key)
                if claimed:
                    try:
                        # Looked up again: the other eval may have finished it just now.
                        stored = await history.find(key)
                        if stored is not None:
                            result = _result(item, mode, stored, reused=True)
                        else:
                            result, run = await _run_item(engine, item, mode, own[mode])
                    except BaseException:
                        claims.release(key)
                        raise
            if claimed:
                # Saved outside the gate: a slow or locked history holds no item back.
                try:
                    if run is not None:
                        await history.save(run, key, secret)
                finally:
                    claims.release(key)
                break
            await asyncio.sleep(_CLAIM_POLL)
        if on_result is not None:
            on_result(result)
        return result

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item, mode)) for item in items for mode in chosen]
    finally:
        claims.close()
    report = build_report(dataset.name, engine.model, chosen, [task.result() for task in tasks])
    report.stopped = stopped[0] if stopped else None
    report.warnings = warnings
    return report


async def default_concurrency(engine: Engine) -> int:
    """Runs at once by default: the endpoint's own slots where it says, else 4."""
    return await engine.client.server_slots() or DEFAULT_CONCURRENCY


async def _run_item(
    engine: Engine, item: Item, mode: Mode, options: dict[str, object]
) -> tuple[ItemResult, Run | None]:
    """Run one item through `mode`: its result, and the run to save (None when none was made)."""
    try:
        # Not saved by the engine: the eval saves each run once, tagged with its key.
        run = await collect(engine.open(mode, item.question, options, history=False))
    except RunFailedError as error:
        run = error.run
    except InputError as error:
        # A question the engine refuses (too long, a control character) fails its own item
        # only; nothing was sent, so there is no run to keep.
        return _refused(item, mode, str(error)), None
    return _result(item, mode, run, reused=False), run


# How often an item another eval is running is looked at again.
_CLAIM_POLL = 0.2


class _History:
    """The eval's use of the history store. The first problem with it (corrupt, a directory,
    read-only, locked for longer than the store waits) turns it off for the rest of the eval
    with one warning: the eval still finishes and reports, it only cannot be resumed."""

    def __init__(self, store: Store | None, warn: Callable[[str], None]) -> None:
        self.store = store
        self._warn = warn
        # One save at a time (SQLite writes one at a time anyway), so that once the store has
        # failed the saves queued behind it are dropped instead of each waiting out the lock.
        self._saving = asyncio.Lock()

    async def check(self) -> None:
        """Open the store now, so a problem is told before any item is paid for."""
        await self.find("eval:check")

    async def find(self, key: str) -> Run | None:
        """The finished run stored under `key`, if the store has one (and works)."""
        store = self.store
        if store is None:
            return None
        try:
            # In a thread: a locked database waits there, not on the event loop.
            return await asyncio.to_thread(store.find_eval, key)
        except Exception as error:
            self._off(error)
            return None

    async def save(self, run: Run, key: str, secret: str | None) -> None:
        """Save `run` under `key`; a failure turns the store off instead of failing the eval."""
        async with self._saving:
            store = self.store
            if store is None:
                return
            try:
                await asyncio.to_thread(store.save, run, eval_key=key, redact=secret)
            except Exception as error:
                self._off(error)

    def _off(self, error: Exception) -> None:
        if self.store is None:
            return  # told once
        where = self.store.path
        self.store = None
        reason = str(error).removesuffix(".")
        if str(where) not in reason:
            reason = f"{reason} ({where})"
        self._warn(
            f"the history cannot be used: {reason}. This eval goes on without saving its "
            "runs, so it cannot be resumed."
        )


class _Claims:
    """Which items this process is running right now, told to other processes through
    byte-range locks on one file beside the history: two evals of the same set at once
    then split the items instead of paying for each twice. A lock dies with its process,
    so a killed eval leaves nothing behind. (POSIX only; elsewhere nothing is shared.)"""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._held: set[str] = set()

    @classmethod
    def beside(cls, store: Store | None, warn: Callable[[str], None]) -> _Claims:
        """Claims kept next to `store` (none without a store: nothing could be reused)."""
        if store is None or sys.platform == "win32":
            return cls(None)
        path = store.path.with_name(store.path.name + ".claims")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as error:
            warn(f"cannot share running items with other evals ({path}: {error.strerror}).")
            return cls(None)

    def take(self, key: str) -> bool:
        """Claim `key`; False when another process is running it now."""
        if self._fd is None:
            return True
        import fcntl

        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(key))
        except OSError:
            return False
        self._held.add(key)
        return True

    def release(self, key: str) -> None:
        """Let other processes have `key` again."""
        if self._fd is None or key not in self._held:
            return
        import fcntl

        self._held.discard(key)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _offset(key))

    def close(self) -> None:
        """Release every claim."""
        if self._fd is not None:
            os.close(self._fd)  # drops every lock this process holds on the file
            self._fd = None


def _offset(key: str) -> int:
    # One byte per key, far apart: 62 bits of the key's hash make a clash vanishingly rare.
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def _refused(item: Item, mode: Mode, error: str, *, status: str = "failed") -> ItemResult:
    return ItemResult(
        item=item.index,
        mode=mode,
        question=item.question,
        gold=parse_gold(item.answer),
        scorer=item.scorer,
        status=status,
        correct=None,
        predicted=None,
        answer=None,
        error=error,
        tokens=0,
        seconds=0.0,
        run_id=None,
        reused=False,
    )


def stage_answers(run: Run) -> list[tuple[str, str]]:
    """Every answer a run held on its way, in order, named by stage: each turn's answer and
    the synthesis's for refine, the final answer for steps, the one reply for single. Generic
    over whatever turns, synthesis and final answer a mode's result has."""
    found: list[tuple[str, str]] = []
    turns = getattr(run, "turns", None) or []
    if len(turns) > 1 or getattr(run, "synthesis", None) is not None:
        found += [(f"turn {turn.index}", turn.answer) for turn in turns]
    synthesis = getattr(run, "synthesis", None)
    if synthesis is not None:
        found.append(("synthesis", synthesis.answer))
    if not found and run.answer is not None:
        found.append(("final" if getattr(run, "steps", None) else "answer", run.answer))
    return found


def _scored(answers: list[tuple[str, str]], item: Item) -> list[StageScore]:
    scores = []
    for stage, answer in answers:
        verdict = score(answer, item.answer, item.scorer)
        scores.append(StageScore(stage=stage, correct=verdict.correct, predicted=verdict.predicted))
    return scores


def _result(item: Item, mode: Mode, run: Run, *, reused: bool) -> ItemResult:
    verdict = score(run.answer, item.answer, item.scorer) if run.ok else None
    samples = _scored(run.result.side_by_side(), item) if run.ok else []
    return ItemResult(
        item=item.index,
        mode=mode,
        question=item.question,
        gold=parse_gold(item.answer),
        scorer=item.scorer,
        status=run.status,
        correct=verdict.correct if verdict else None,
        predicted=verdict.predicted if verdict else None,
        answer=run.answer,
        error=run.error,
        tokens=run.usage.total_tokens,
        # The time the mode took, not the time it waited for a free slot at the server.
        seconds=round(max(0.0, run.seconds - run.queued_seconds), 3),
        queued_seconds=round(run.queued_seconds, 3),
        run_id=run.id,
        reused=reused,
        stages=_scored(stage_answers(run), item) if run.ok else [],
        samples=samples,
        sample_accuracy=sum(s.correct for s in samples) / len(samples) if samples else None,
        confidence=run.result.confidence() if run.ok else None,
    )


# -- the report ---------------------------------------------------------------------------------


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); `correct` may be a mean
    share times n (a fraction of an item)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a_only: int, b_only: int) -> float:
    """The exact two-sided McNemar p-value: how likely a split of the discordant pairs at least
    this uneven is when neither mode is better (a binomial test with p = 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def items_needed(items: int, a_only: int, b_only: int, alpha: float = 0.05) -> int | None:
    """About how many more items, answered like these, would make the difference significant:
    the discordant counts are scaled up in proportion until the test says p < alpha. None when
    there is no difference to scale (equal split) or it would take more than a million."""
    if a_only == b_only or items == 0:
        return None
    total = items
    while total <= 1_000_000:
        total = max(total + 1, int(total * 1.1))
        factor = total / items
        if mcnemar(round(a_only * factor), round(b_only * factor)) < alpha:
            return total - items
    return None


def _verdict(h: HeadToHead, alpha: float = 0.05) -> str:
    p = f"p = {h.p_value:.2g}" if h.p_value >= 0.001 else "p < 0.001"
    if h.a_only + h.b_only == 0:
        return f"no difference: {h.a} and {h.b} got the same items right ({p})"
    if h.p_value < alpha:
        better, worse = (h.a, h.b) if h.a_only > h.b_only else (h.b, h.a)
        return f"{better} is better than {worse} on this set ({p})"
    more = items_needed(h.items, h.a_only, h.b_only, alpha)
    tail = (
        f"; about {more:,} more items would be needed to see a difference of this size"
        if more is not None
        else ""
    )
    return f"no detectable difference ({p}){tail}"


def _stage_figures(
    modes: Sequence[Mode], results: list[ItemResult]
) -> tuple[list[StageSummary], list[Flips]]:
    """Accuracy after each stage, and the flips between consecutive stages, per mode."""
    summaries: list[StageSummary] = []
    flips: list[Flips] = []
    for mode in modes:
        mine = [r for r in results if r.mode == mode and r.correct is not None and r.stages]
        names: list[str] = []
        for r in mine:
            names += [s.stage for s in r.stages if s.stage not in names]
        if len(names) < 2:
            continue  # one answer per run: the mode's own line says it all
        for name in names:
            marks = [s.correct for r in mine for s in r.stages if s.stage == name]
            right = sum(marks)
            low, high = wilson(right, len(marks))
            summaries.append(
                StageSummary(
                    mode=mode,
                    stage=name,
                    scored=len(marks),
                    correct=right,
                    accuracy=right / len(marks) if marks else 0.0,
                    low=low,
                    high=high,
                )
            )
        for before, after in pairwise(names):
            change = Flips(
                mode=mode,
                before=before,
                after=after,
                right_to_wrong=[],
                wrong_to_right=[],
                wrong_to_other_wrong=[],
            )
            for r in mine:
                by = {s.stage: s for s in r.stages}
                x, y = by.get(before), by.get(after)
                if x is None or y is None:
                    continue
                if x.correct and not y.correct:
                    change.right_to_wrong.append(r.item)
                elif not x.correct and y.correct:
                    change.wrong_to_right.append(r.item)
                elif not x.correct and not y.correct and _differ(x.predicted, y.predicted):
                    change.wrong_to_other_wrong.append(r.item)
            flips.append(change)
    return summaries, flips


# Bands of a mode's own confidence, highest first: (lowest value in the band, its name).
CONFIDENCE_BANDS = ((1.0, "100%"), (0.8, "80–99%"), (0.6, "60–79%"), (0.0, "below 60%"))


def confidence_band(value: float) -> str:
    """The name of the band a confidence falls in ("80–99%")."""
    # A hair of slack: 4/5 must land in 80–99% however the division rounded.
    return next(name for low, name in CONFIDENCE_BANDS if value >= low - 1e-9)


def _sample_figures(
    modes: Sequence[Mode], results: list[ItemResult]
) -> tuple[list[SampleSummary], list[ConfidenceBucket]]:
    """Per mode: its side-by-side answers alone against its own answer, and its accuracy by
    its own confidence."""
    summaries: list[SampleSummary] = []
    buckets: list[ConfidenceBucket] = []
    for mode in modes:
        scored = [r for r in results if r.mode == mode and r.correct is not None]
        drawn = [r for r in scored if r.samples and r.sample_accuracy is not None]
        if drawn:
            n = len(drawn)
            share = sum(r.sample_accuracy or 0.0 for r in drawn) / n
            any_right = sum(any(s.correct for s in r.samples) for r in drawn)
            right = sum(r.correct is True for r in drawn)
            summaries.append(
                SampleSummary(
                    mode=mode,
                    items=n,
                    answers=sum(len(r.samples) for r in drawn),
                    sample_accuracy=share,
                    sample_low=wilson(share * n, n)[0],
                    sample_high=wilson(share * n, n)[1],
                    any_right=any_right,
                    any_accuracy=any_right / n,
                    any_low=wilson(any_right, n)[0],
                    any_high=wilson(any_right, n)[1],
                    correct=right,
                    accuracy=right / n,
                    low=wilson(right, n)[0],
                    high=wilson(right, n)[1],
                )
            )
        for _, band in CONFIDENCE_BANDS:
            inside = [
                r
                for r in scored
                if r.confidence is not None and confidence_band(r.confidence) == band
            ]
            if not inside:
                continue
            right = sum(r.correct is True for r in inside)
            low, high = wilson(right, len(inside))
            buckets.append(
                ConfidenceBucket(
                    mode=mode,
                    bucket=band,
                    items=len(inside),
                    mean_confidence=sum(r.confidence or 0.0 for r in inside) / len(inside),
                    correct=right,
                    accuracy=right / len(inside),
                    low=low,
                    high=high,
                )
            )
    return summaries, buckets


def _differ(a: str | None, b: str | None) -> bool:
    from llamaberry.core.scoring import normalize

    return normalize(a or "") != normalize(b or "")


def build_report(
    dataset: str, model: str, modes: Sequence[Mode], results: list[ItemResult]
) -> Report:
    """Summarize per-item results: accuracy over scored items, means over scored runs."""
    summaries = []
    for mode in modes:
        mine = [r for r in results if r.mode == mode]
        scored = [r for r in mine if r.correct is not None]
        right = sum(r.correct is True for r in scored)
        low, high = wilson(right, len(scored)) if scored else (None, None)
        summaries.append(
            ModeSummary(
                mode=mode,
                items=len(mine),
                scored=len(scored),
                correct=right,
                accuracy=right / len(scored) if scored else None,
                low=low,
                high=high,
                mean_tokens=_mean([r.tokens for r in scored]),
                mean_seconds=_mean([r.seconds for r in scored]),
                failures=len(mine) - len(scored),
                reused=sum(r.reused for r in mine),
            )
        )
    baseline = next((s for s in summaries if s.mode == "single"), None)
    for s in summaries:
        if baseline is None or s is baseline or s.accuracy is None or baseline.accuracy is None:
            continue
        extra = (s.mean_tokens or 0) - (baseline.mean_tokens or 0)
        if extra > 0:
            s.gain_per_1k_tokens = (s.accuracy - baseline.accuracy) * 100 / (extra / 1000)
    verdicts = {(r.item, r.mode): r.correct for r in results if r.correct is not None}
    pairs = []
    for a, b in combinations(modes, 2):
        both = [i for (i, m) in verdicts if m == a and (i, b) in verdicts]
        pair = HeadToHead(
            a=a,
            b=b,
            items=len(both),
            a_only=sum(verdicts[i, a] and not verdicts[i, b] for i in both),
            b_only=sum(verdicts[i, b] and not verdicts[i, a] for i in both),
        )
        pair.p_value = mcnemar(pair.a_only, pair.b_only)
        pair.verdict = _verdict(pair)
        pairs.append(pair)
    stages, flips = _stage_figures(modes, results)
    samples, confidence = _sample_figures(modes, results)
    ordered = sorted(results, key=lambda r: (r.item, list(modes).index(r.mode)))
    return Report(
        dataset=dataset,
        model=model,
        modes=list(modes),
        results=ordered,
        summaries=summaries,
        head_to_head=pairs,
        stages=stages,
        flips=flips,
        samples=samples,
        confidence=confidence,
    )


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def report_markdown(report: Report) -> str:
    """The report as Markdown: a table per mode's figures, then the pairwise differences."""
    lines = [
        f"## Eval: {report.dataset} · {report.model}",
        "",
        "| mode | accuracy | 95% interval | correct / scored | mean tokens | mean seconds "
        "| failures | points per 1k extra tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.summaries:
        accuracy = f"{s.accuracy:.1%}" if s.accuracy is not None else "–"
        interval = f"{s.low:.1%} – {s.high:.1%}" if s.low is not None else "–"
        tokens = f"{s.mean_tokens:,.0f}" if s.mean_tokens is not None else "–"
        seconds = f"{s.mean_seconds:.2f}" if s.mean_seconds is not None else "–"
        gain = f"{s.gain_per_1k_tokens:+.1f}" if s.gain_per_1k_tokens is not None else "–"
        lines.append(
            f"| {s.mode} | {accuracy} | {interval} | {s.correct} / {s.scored} | {tokens} "
            f"| {seconds} | {s.failures} | {gain} |"
        )
    if any(s.gain_per_1k_tokens is not None for s in report.summaries):
        lines += [
            "",
            "Points per 1k extra tokens: accuracy gained over single, in percentage points, for "
            "every 1,000 tokens per item spent beyond single's.",
        ]
    if report.head_to_head:
        lines += [
            "",
            "| modes | items both answered | right only in first | right only in second "
            "| McNemar p | verdict |",
        ]
        lines.append("|---|---:|---:|---:|---:|---|")
        for h in report.head_to_head:
            lines.append(
                f"| {h.a} vs {h.b} | {h.items} | {h.a_only} | {h.b_only} | {h.p_value:.3g} "
                f"| {h.verdict} |"
            )
    if report.stages:
        lines += [
            "",
            "### Accuracy after each turn",
            "",
            "| mode | stage | accuracy | 95% interval | correct / scored |",
            "|---|---|---:|---:|---:|",
        ]
        for t in report.stages:
            lines.append(
                f"| {t.mode} | {t.stage} | {t.accuracy:.1%} | {t.low:.1%} – {t.high:.1%} "
                f"| {t.correct} / {t.scored} |"
            )
    if report.flips:
        lines += [
            "",
            "### How answers changed between turns",
            "",
            "| mode | from → to | right → wrong | wrong → right | wrong → another wrong |",
            "|---|---|---|---|---|",
        ]
        for f in report.flips:
            lines.append(
                f"| {f.mode} | {f.before} → {f.after} | {_ids(f.right_to_wrong)} "
                f"| {_ids(f.wrong_to_right)} | {_ids(f.wrong_to_other_wrong)} |"
            )
        lines += ["", "Items are numbered from 0 in dataset order (the `item` of results.jsonl)."]
    if report.samples:
        lines += [
            "",
            "### Each answer drawn on its own",
            "",
            "| mode | answers per item | one answer alone | 95% interval | any answer right "
            "| 95% interval | the mode's answer | 95% interval |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for a in report.samples:
            lines.append(
                f"| {a.mode} | {a.answers / a.items:.3g} | {a.sample_accuracy:.1%} "
                f"| {a.sample_low:.1%} – {a.sample_high:.1%} | {a.any_accuracy:.1%} "
                f"| {a.any_low:.1%} – {a.any_high:.1%} | {a.accuracy:.1%} "
                f"| {a.low:.1%} – {a.high:.1%} |"
            )
        lines += [
            "",
            "One answer alone: the share of a mode's side-by-side answers (the ones it drew "
            "independently, at once) that were right, averaged over items. Any answer right: "
            "items where at least one was (what a perfect picker would get). The mode's answer: "
            "the one it settled on from them. Intervals are over items, since the answers to one "
            "question are not independent.",
        ]
    if report.confidence:
        lines += [
            "",
            "### Right answers by the mode's own confidence",
            "",
            "| mode | confidence | items | mean confidence | right | accuracy | 95% interval |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for b in report.confidence:
            lines.append(
                f"| {b.mode} | {b.bucket} | {b.items} | {b.mean_confidence:.0%} | {b.correct} "
                f"| {b.accuracy:.1%} | {b.low:.1%} – {b.high:.1%} |"
            )
        lines += [
            "",
            *_confidence_lines(report.confidence),
            "",
            "A mode's confidence is its own: "
            + "; ".join(
                f"{mode}'s is {ModeResult.type_for(mode).confidence_means}"
                for mode in dict.fromkeys(b.mode for b in report.confidence)
            )
            + ". A confidence worth reading is right more often where it is higher.",
        ]
    if any(s.failures for s in report.summaries):
        lines += ["", "Failed runs are not scored; rerun the same command to retry them."]
    if report.stopped:
        lines += ["", f"**Stopped early.** {report.stopped}."]
    for warning in report.warnings:
        lines += ["", f"Note: {warning}"]
    return "\n".join(lines) + "\n"


def _confidence_lines(buckets: list[ConfidenceBucket], high: float = 0.8) -> list[str]:
    """Per mode, in words: how often its answer was right when it was sure and when it was not
    (vote's confidence is its agreement: the winner's share of the readable samples)."""
    lines = []
    for mode in dict.fromkeys(b.mode for b in buckets):
        mine = [b for b in buckets if b.mode == mode]
        parts = []
        for where, group in (
            (f"where its confidence was at least {high:.0%}", [b for b in mine if _sure(b, high)]),
            (f"where it was below {high:.0%}", [b for b in mine if not _sure(b, high)]),
        ):
            items, right = sum(b.items for b in group), sum(b.correct for b in group)
            if items:
                parts.append(f"{right} of {items} items ({right / items:.0%}) {where}")
        lines.append(f"{mode}: right on {', and on '.join(parts)}.")
    return lines


def _sure(bucket: ConfidenceBucket, high: float) -> bool:
    # Bands never straddle `high` (it is a band's edge), so the band's mean tells its side.
    return bucket.mean_confidence >= high - 1e-9


def _ids(items: list[int], shown: int = 12) -> str:
    """'3: items 1, 4, 9' (the first few ids, then how many more)."""
    if not items:
        return "0"
    listed = ", ".join(str(i) for i in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)}: items {listed}{more}"


def write_results(report: Report, path: Path) -> None:
    """Write the per-item results as JSONL, one line per (item, mode)."""
    with path.open("w", encoding="utf-8") as out:
        for result in report.results:
            out.write(redact_model(result).model_dump_json() + "\n")


def draw_chart(report: Report, path: Path) -> None:
    """Save a PNG: accuracy after each turn (95% intervals) beside the single baseline; for
    modes that draw answers side by side, one alone against the mode's answer and any right;
    and accuracy against mean tokens, one point per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staged = list(dict.fromkeys(t.mode for t in report.stages))
    colours: dict[str, str] = {m: f"C{i}" for i, m in enumerate(report.modes)}  # every panel
    panels = 1 + bool(staged) + bool(report.samples)
    figure, axes_list = plt.subplots(1, panels, figsize=(6 * panels, 4.2), dpi=120, squeeze=False)
    if staged:
        _draw_turns(axes_list[0][0], report, staged, colours)
    if report.samples:
        _draw_samples(axes_list[0][panels - 2], report, colours)
    axes = axes_list[0][-1]
    for s in report.summaries:
        if s.accuracy is None or s.mean_tokens is None:
            continue
        # Clamped: at 0% or 100% rounding can put the interval's edge a hair inside the point.
        below = max(0.0, s.accuracy - (s.low or 0.0))
        above = max(0.0, (s.high or 0.0) - s.accuracy)
        axes.errorbar(
            [s.mean_tokens],
            [s.accuracy],
            yerr=[[below], [above]],
            fmt="o",
            capsize=4,
            color=colours.get(s.mode),
        )
        axes.annotate(
            s.mode, (s.mean_tokens, s.accuracy), xytext=(6, 6), textcoords="offset points"
        )
    axes.set_xlabel("mean tokens per item")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("accuracy and what it cost")
    axes.grid(alpha=0.3)
    figure.suptitle(f"{report.dataset} · {report.model}")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def _draw_baseline(axes: Any, report: Report) -> None:
    """Single's accuracy as a dashed line over its 95% band, where single ran."""
    baseline = next((s for s in report.summaries if s.mode == "single"), None)
    if baseline is not None and baseline.accuracy is not None:
        axes.axhspan(baseline.low or 0.0, baseline.high or 0.0, color="grey", alpha=0.15)
        axes.axhline(
            baseline.accuracy, color="grey", linestyle="--", label="single (baseline, 95% band)"
        )


def _draw_samples(axes: Any, report: Report, colours: dict[str, str]) -> None:
    """Per mode that draws answers side by side: one answer alone, the mode's own answer and
    any answer right, each with its 95% interval over items, over the single baseline."""
    names = ["one answer alone", "the mode's answer", "any answer right"]
    _draw_baseline(axes, report)
    for offset, a in enumerate(report.samples):
        shift = (offset - (len(report.samples) - 1) / 2) * 0.12  # side by side, not on top
        figures = [
            (a.sample_accuracy, a.sample_low, a.sample_high),
            (a.accuracy, a.low, a.high),
            (a.any_accuracy, a.any_low, a.any_high),
        ]
        xs = [i + shift for i in range(len(names))]
        ys = [value for value, _, _ in figures]
        below = [max(0.0, value - low) for value, low, _ in figures]
        above = [max(0.0, high - value) for value, _, high in figures]
        # No value labels: side by side they would overlap; the report has the figures.
        axes.errorbar(
            xs, ys, yerr=[below, above], fmt="o", capsize=4, label=a.mode, color=colours[a.mode]
        )
    _finish_axes(axes, names, "each answer drawn against the mode's")


def _draw_turns(axes: Any, report: Report, staged: list[Mode], colours: dict[str, str]) -> None:
    """Accuracy after each stage of the modes that have stages, over the single baseline."""
    names: list[str] = []
    for t in report.stages:
        if t.stage not in names:
            names.append(t.stage)
    positions = {name: i for i, name in enumerate(names)}
    _draw_baseline(axes, report)
    for offset, mode in enumerate(staged):
        mine = [t for t in report.stages if t.mode == mode]
        shift = (offset - (len(staged) - 1) / 2) * 0.08  # side by side, not on top
        xs = [positions[t.stage] + shift for t in mine]
        ys = [t.accuracy for t in mine]
        below = [max(0.0, t.accuracy - t.low) for t in mine]
        above = [max(0.0, t.high - t.accuracy) for t in mine]
        axes.errorbar(
            xs, ys, yerr=[below, above], fmt="o-", capsize=4, label=mode, color=colours.get(mode)
        )
        for t, x in zip(mine, xs, strict=True):
            axes.annotate(
                f"{t.accuracy:.0%}", (x, t.accuracy), xytext=(6, -12), textcoords="offset points"
            )
    _finish_axes(axes, names, "accuracy after each turn")


def _finish_axes(axes: Any, names: list[str], title: str) -> None:
    """Stage names along x, accuracy 0-1 up y, the title, a light grid and the legend."""
    axes.set_xticks(range(len(names)), names)
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_ylim(-0.05, 1.05)
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
