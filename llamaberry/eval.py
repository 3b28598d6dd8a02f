"""Eval: a dataset of questions with known answers through several modes, scored and costed.

Each (item, mode) pair is one run. Finished runs are tagged in the history store with a key made
of the question, its occurrence in the dataset, the mode and every setting that changes the
answer (model, provider, endpoint, turns, temperature, token budget, effort, step bounds) and
the model the endpoint really serves when that is not the asked id (llama.cpp answers any id
with its one model); a rerun of the same eval takes those runs from the store instead of paying
for them again, and re-scores them against the dataset's current golds. Failed runs are not
reused, so a rerun retries them.

An item's seconds leave out the time its calls waited in the server's queue (reported apart as
`queued_seconds`, where the server says, as llama.cpp does), so modes compare on the time they
took, not on how busy the server was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .errors import InputError, RunFailedError
from .redact import redact_model
from .results import Mode, Run
from .scoring import SCORERS, Scorer, infer_scorer, parse_gold, score

if TYPE_CHECKING:
    from .engine import Engine
    from .store import Store

BUILTIN = ("tricky",)
# Runs at once when neither the caller nor the endpoint says how many it can serve.
DEFAULT_CONCURRENCY = 4

# The settings that change what a run answers; a change in any of them means a fresh run.
_ANSWER_SETTINGS = (
    "provider",
    "model",
    "base_url",
    "turns",
    "temperature",
    "max_tokens",
    "reasoning_effort",
    "min_steps",
    "max_steps",
)


class Item(BaseModel):
    """One dataset record: the question, its gold answer and the scorer that checks it."""

    index: int
    question: str
    answer: str
    scorer: Scorer
    occurrence: int = 0


class Dataset(BaseModel):
    """A named list of items."""

    name: str
    items: list[Item]


class ItemResult(BaseModel):
    """One item through one mode: the verdict, the answer read, and what it cost."""

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


class HeadToHead(BaseModel):
    """Two modes on the items both answered: how many each got right that the other missed."""

    a: Mode
    b: Mode
    items: int
    a_only: int
    b_only: int


class Report(BaseModel):
    """The whole eval: per-item results, per-mode summaries and pairwise differences."""

    dataset: str
    model: str
    modes: list[Mode]
    results: list[ItemResult]
    summaries: list[ModeSummary]
    head_to_head: list[HeadToHead]


# -- datasets -----------------------------------------------------------------------------------


def load_dataset(source: str | Path, *, builtin: bool = False) -> Dataset:
    """Read a JSONL dataset (or a built-in one by name); `InputError` names the bad line."""
    if builtin:
        if source not in BUILTIN:
            raise InputError(f"No built-in dataset '{source}'; there is: {', '.join(BUILTIN)}.")
        text = resources.files("llamaberry").joinpath(f"data/{source}.jsonl").read_text("utf-8")
        name = str(source)
    else:
        path = Path(source)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"Cannot read the dataset {path}: {error}") from None
        name = path.stem
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        items.append(_item(name, number, line, len(items), seen))
    if not items:
        raise InputError(f"The dataset {name} has no records.")
    return Dataset(name=name, items=items)


def _item(name: str, number: int, line: str, index: int, seen: dict[str, int]) -> Item:
    where = f"{name} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where} is not JSON: {error.msg}.") from None
    if not isinstance(record, dict):
        raise InputError(f"{where} must be a JSON object.")
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise InputError(f'{where} needs a "question" string.')
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not parse_gold(answer):
        raise InputError(f'{where} needs an "answer" string.')
    scorer = record.get("scorer") or infer_scorer(answer)
    if scorer not in SCORERS:
        raise InputError(f"{where}: unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}.")
    try:
        score(parse_gold(answer), answer, scorer)  # a gold its scorer cannot read is a bad line
    except ValueError as error:
        raise InputError(f"{where}: {error}.") from None
    occurrence = seen.get(question, 0)
    seen[question] = occurrence + 1
    return Item(index=index, question=question, answer=answer, scorer=scorer, occurrence=occurrence)


def eval_key(engine: Engine, item: Item, mode: Mode, served: str | None = None) -> str:
    """The store tag for this item through this mode with this engine's settings.

    `served` is the model the endpoint really answers with; it joins the key only when it is
    not the asked id, so a single-model server that changed its model is asked afresh.
    """
    settings = engine.settings.model_dump(include=set(_ANSWER_SETTINGS), mode="json")
    if served is not None and served != settings["model"]:
        settings["served_model"] = served
    blob = json.dumps([item.question, item.occurrence, mode, settings], sort_keys=True)
    return "eval:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


# -- running ------------------------------------------------------------------------------------


async def evaluate(
    engine: Engine,
    dataset: Dataset,
    modes: Sequence[Mode] = ("single", "refine"),
    *,
    concurrency: int | None = None,
    limit: int | None = None,
    store: Store | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> Report:
    """Run every item through every mode (reusing finished runs from the store) and score them.

    `concurrency` defaults to what the endpoint can serve at once where it says (llama.cpp's
    slots), else 4. Cancelling it (Ctrl-C) loses nothing that finished: each run is saved as
    it ends.
    """
    from .compare import check_modes
    from .store import Store

    chosen = check_modes(modes)
    if concurrency is None:
        concurrency = await default_concurrency(engine)
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1 (got {concurrency}).")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit}).")
    items = dataset.items[:limit] if limit else dataset.items
    store = store or engine.history or Store()
    gate = asyncio.Semaphore(concurrency)
    secret = engine.settings.api_key.get_secret_value() if engine.settings.api_key else None
    served = await engine.client.resolve_model()

    async def one(item: Item, mode: Mode) -> ItemResult:
        key = eval_key(engine, item, mode, served)
        stored = store.find_eval(key)
        if stored is not None:
            result = _result(item, mode, stored, reused=True)
        else:
            async with gate:
                try:
                    run = await engine.run(mode, item.question)
                except RunFailedError as error:
                    run = error.run
                except InputError as error:
                    # A question the engine refuses (too long, a control character) fails
                    # its own item only; nothing was sent, so there is no run to keep.
                    run = None
                    result = _refused(item, mode, str(error))
            if run is not None:
                store.save(run, eval_key=key, redact=secret)
                result = _result(item, mode, run, reused=False)
        if on_result is not None:
            on_result(result)
        return result

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(item, mode)) for item in items for mode in chosen]
    return build_report(dataset.name, engine.model, chosen, [task.result() for task in tasks])


async def default_concurrency(engine: Engine) -> int:
    """Runs at once by default: the endpoint's own slots where it says, else 4."""
    return await engine.client.server_slots() or DEFAULT_CONCURRENCY


def _refused(item: Item, mode: Mode, error: str) -> ItemResult:
    return ItemResult(
        item=item.index,
        mode=mode,
        question=item.question,
        gold=parse_gold(item.answer),
        scorer=item.scorer,
        status="failed",
        correct=None,
        predicted=None,
        answer=None,
        error=error,
        tokens=0,
        seconds=0.0,
        run_id=None,
        reused=False,
    )


def _result(item: Item, mode: Mode, run: Run, *, reused: bool) -> ItemResult:
    verdict = score(run.answer, item.answer, item.scorer) if run.ok else None
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
    )


# -- the report ---------------------------------------------------------------------------------


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
    verdicts = {(r.item, r.mode): r.correct for r in results if r.correct is not None}
    pairs = []
    for a, b in combinations(modes, 2):
        both = [i for (i, m) in verdicts if m == a and (i, b) in verdicts]
        pairs.append(
            HeadToHead(
                a=a,
                b=b,
                items=len(both),
                a_only=sum(verdicts[i, a] and not verdicts[i, b] for i in both),
                b_only=sum(verdicts[i, b] and not verdicts[i, a] for i in both),
            )
        )
    ordered = sorted(results, key=lambda r: (r.item, list(modes).index(r.mode)))
    return Report(
        dataset=dataset,
        model=model,
        modes=list(modes),
        results=ordered,
        summaries=summaries,
        head_to_head=pairs,
    )


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def report_markdown(report: Report) -> str:
    """The report as Markdown: a table per mode's figures, then the pairwise differences."""
    lines = [
        f"## Eval: {report.dataset} · {report.model}",
        "",
        "| mode | accuracy | 95% interval | correct / scored | mean tokens | mean seconds "
        "| failures |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.summaries:
        accuracy = f"{s.accuracy:.1%}" if s.accuracy is not None else "–"
        interval = f"{s.low:.1%} – {s.high:.1%}" if s.low is not None else "–"
        tokens = f"{s.mean_tokens:,.0f}" if s.mean_tokens is not None else "–"
        seconds = f"{s.mean_seconds:.2f}" if s.mean_seconds is not None else "–"
        lines.append(
            f"| {s.mode} | {accuracy} | {interval} | {s.correct} / {s.scored} | {tokens} "
            f"| {seconds} | {s.failures} |"
        )
    if report.head_to_head:
        lines += [
            "",
            "| modes | items both answered | right only in first | right only in second |",
        ]
        lines.append("|---|---:|---:|---:|")
        for h in report.head_to_head:
            lines.append(f"| {h.a} vs {h.b} | {h.items} | {h.a_only} | {h.b_only} |")
    if any(s.failures for s in report.summaries):
        lines += ["", "Failed runs are not scored; rerun the same command to retry them."]
    return "\n".join(lines) + "\n"


def write_results(report: Report, path: Path) -> None:
    """Write the per-item results as JSONL, one line per (item, mode)."""
    with path.open("w", encoding="utf-8") as out:
        for result in report.results:
            out.write(redact_model(result).model_dump_json() + "\n")


def draw_chart(report: Report, path: Path) -> None:
    """Save a PNG of accuracy (with its 95% interval) against mean tokens, one point per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for s in report.summaries:
        if s.accuracy is None or s.mean_tokens is None:
            continue
        # Clamped: at 0% or 100% rounding can put the interval's edge a hair inside the point.
        below = max(0.0, s.accuracy - (s.low or 0.0))
        above = max(0.0, (s.high or 0.0) - s.accuracy)
        axes.errorbar([s.mean_tokens], [s.accuracy], yerr=[[below], [above]], fmt="o", capsize=4)
        axes.annotate(
            s.mode, (s.mean_tokens, s.accuracy), xytext=(6, 6), textcoords="offset points"
        )
    axes.set_xlabel("mean tokens per item")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title(f"{report.dataset} · {report.model}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
