"""Running an eval: every item through every mode at a bounded concurrency, each run scored
into an `ItemResult` (or taken from the history when it already finished)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llamaberry import modes as registry
from llamaberry.core.errors import InputError, RunFailedError, format_duration
from llamaberry.core.prices import (
    AT_LIST_PRICE,
    BILLS_LESS,
    PRICED_PROVIDERS,
    at_list_price,
    cost_text,
    run_cost,
)
from llamaberry.core.redact import redact
from llamaberry.core.results import Mode, Run, Usage
from llamaberry.core.scoring import parse_gold, prepare_math, score
from llamaberry.engine import collect
from llamaberry.eval.datasets import Dataset, Item
from llamaberry.eval.report import build_report
from llamaberry.eval.results import ItemResult, ModeSummary, Report, StageScore
from llamaberry.eval.resume import Claims, History, eval_key, history_store

if TYPE_CHECKING:
    from llamaberry.engine import Engine
    from llamaberry.eval.batch import Batcher
    from llamaberry.providers.limits import RateLimiter
    from llamaberry.store import Store


# Runs at once when neither the caller nor the endpoint says how many it can serve.
DEFAULT_CONCURRENCY = 4


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
    batcher: Batcher | None = None,
    **options: object,
) -> Report:
    """Run every item through every mode (reusing finished runs from the store) and score them.

    `modes` defaults to the registry's default set; `options` go to the modes that take them.
    `concurrency` defaults to what the endpoint can serve at once where it says (llama.cpp's
    slots), else 4. Cancelling it (Ctrl-C) loses nothing that finished: each run is saved as
    it ends. The runs go to `store`, else the engine's history, else the default history
    unless LLAMABERRY_HISTORY=0. A history that cannot be used costs the eval its resume,
    never its report: `on_warning` is told once and the eval goes on unsaved.

    With a `batcher` (whose `BatchClient` is the engine's client), every run starts at once
    and their calls go to the provider's Batch API in rounds (see `eval.batch`).
    """
    chosen, own = _modes_and_options(modes, options)
    if concurrency is None:
        concurrency = await default_concurrency(engine)
    _check_bounds(concurrency, limit)
    items = dataset.items[:limit] if limit else dataset.items
    unfit = None
    if any(item.scorer == "math" for item in items):
        unfit = await asyncio.to_thread(prepare_math)  # sympy's import, off the event loop
    if batcher is not None:
        concurrency = max(1, len(items) * len(chosen))  # a round holds every run's next call
    if engine.settings.provider in PRICED_PROVIDERS:
        await asyncio.to_thread(prepare_prices)  # the price table, off the event loop too
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        if on_warning is not None:
            on_warning(line)

    if unfit is not None:
        warn(unfit)
    history = History(history_store(engine, store, warn), warn)
    await history.check()
    claims = Claims.beside(history.store, warn)
    runs = _Runs(
        engine=engine,
        own=own,
        history=history,
        claims=claims,
        gate=asyncio.Semaphore(concurrency),
        secret=engine.settings.api_key.get_secret_value() if engine.settings.api_key else None,
        served=await engine.client.resolve_model(),
        limiter=getattr(engine.client, "limiter", None),
        on_result=on_result,
        batcher=batcher,
    )
    if batcher is not None:
        batcher.announce([runs.key(item, mode) for item in items for mode in chosen])
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(runs.one(item, mode)) for item in items for mode in chosen]
    finally:
        claims.close()
    if runs.other_prompts:
        warn(other_prompts_line(len(runs.other_prompts)))
    report = build_report(dataset.name, engine.model, chosen, [task.result() for task in tasks])
    report.other_prompts = len(runs.other_prompts)
    report.stopped = runs.stopped[0] if runs.stopped else None
    if batcher is not None:
        report.batch = batch_line(report, batcher.summary())
    report.warnings = warnings
    price_summaries(report.summaries, engine.settings.provider)
    report.provenance = provenance(engine, dataset, len(items), chosen, own, runs.served)
    return report


def _check_bounds(concurrency: int, limit: int | None) -> None:
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1 (got {concurrency}).")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit}).")


def other_prompts_line(count: int) -> str:
    """What the eval says when saved runs were not reused because their prompts differ."""
    runs = "1 saved run was" if count == 1 else f"{count} saved runs were"
    return f"{runs} made with other prompts (another llamaberry version); run again."


def provenance(
    engine: Engine,
    dataset: Dataset,
    items: int,
    modes: Sequence[Mode],
    own: dict[Mode, dict[str, object]],
    served: str | None,
) -> list[tuple[str, str]]:
    """What produced an eval, for someone to run it again: our version, the endpoint and model
    (and the model it really served), every setting that changes an answer, each mode's
    options, the dataset (path, items, content hash, detected format) and the date."""
    from datetime import UTC, datetime
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("llamaberry")
    except PackageNotFoundError:
        ours = "unknown"
    settings = engine.settings
    lines = [
        ("llamaberry", ours),
        ("provider", settings.provider),
        ("model", settings.model),
        ("served model", served or "not said by the endpoint"),
        ("endpoint", redact(settings.base_url or "the provider's default")),
        (
            "temperature",
            "the endpoint's default" if settings.temperature is None else str(settings.temperature),
        ),
        ("max tokens", str(settings.max_tokens)),
        ("reasoning effort", settings.reasoning_effort or "the endpoint's default"),
    ]
    for mode in modes:
        options = registry.options_for(mode, own[mode], engine.options).model_dump(mode="json")
        shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "none"
        lines.append((f"{mode} options", shown))
    lines += [
        ("dataset", dataset.path or f"built-in '{dataset.name}'"),
        ("items", f"{items} of {len(dataset.items)}" + _drawn(dataset)),
        ("dataset sha256", dataset.sha256 or "unknown"),
        ("format", dataset.detected or "as named by the command"),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    return lines


def _modes_and_options(
    modes: Sequence[Mode] | None, options: dict[str, object]
) -> tuple[list[Mode], dict[Mode, dict[str, object]]]:
    """The modes to run (checked against the registry), and for each the options it takes."""
    chosen = registry.check(registry.default_names() if modes is None else modes)
    given = {k: v for k, v in options.items() if v is not None}
    registry.check_defaults(given)
    own = {mode: registry.own_options(mode, given) for mode in chosen}
    return chosen, own


@dataclass
class _Runs:
    """What every (item, mode) run of one eval shares: the engine, the history and the
    claims, the gate that bounds how many run at once, and why sending stopped, if it did."""

    engine: Engine
    own: dict[Mode, dict[str, object]]
    history: History
    claims: Claims
    gate: asyncio.Semaphore
    secret: str | None
    served: str | None
    limiter: RateLimiter | None
    on_result: Callable[[ItemResult], None] | None
    batcher: Batcher | None = None
    stopped: list[str] = field(default_factory=list)
    # The keys of items whose saved run was made with other prompts, so they were run again.
    other_prompts: set[str] = field(default_factory=set)

    def key(self, item: Item, mode: Mode) -> str:
        """The run's key in the history: what makes its answer reusable."""
        return eval_key(self.engine, item, mode, self.served, self.own[mode])

    async def one(self, item: Item, mode: Mode) -> ItemResult:
        """The item through `mode`: from the history when it finished before, else run now."""
        key = self.key(item, mode)
        try:
            result = await self._found_or_run(item, mode, key)
        finally:
            if self.batcher is not None:
                self.batcher.skip(key)  # a run that never started holds no round back
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def _found_or_run(self, item: Item, mode: Mode, key: str) -> ItemResult:
        # A saved run is reused only when it was made with the mode's prompts as they are now.
        prompts = registry.prompt_version(mode)
        stored = await self.history.find(key, prompts)
        if stored is None and await self.history.other_prompts(key, prompts):
            self.other_prompts.add(key)
        while stored is None:
            claimed = await self._claim_and_run(item, mode, key, prompts)
            if claimed is not None:
                return claimed
            await asyncio.sleep(_CLAIM_POLL)
            stored = await self.history.find(key, prompts)
        return _result(item, mode, stored, reused=True)

    async def _claim_and_run(
        self, item: Item, mode: Mode, key: str, prompts: str
    ) -> ItemResult | None:
        """Run the item once a place at the gate is free and it is ours to run; None when
        another eval of the same set is running it (come back for its run later)."""
        run: Run | None = None
        async with self.gate:
            skipped = self._rate_limited(item, mode)
            if skipped is not None:
                return skipped
            # Another eval of the same set may be running this very item: leave it to that
            # one and come back for its run, doing other items meanwhile.
            if not self.claims.take(key):
                return None
            try:
                # Looked up again: the other eval may have finished it just now.
                stored = await self.history.find(key, prompts)
                if stored is not None:
                    result = _result(item, mode, stored, reused=True)
                else:
                    earlier = await self.history.find_unfinished(key, prompts)
                    tagged = self.batcher.run(key) if self.batcher else contextlib.nullcontext()
                    with tagged:
                        result, run = await self._run_item(item, mode, key, earlier)
            except BaseException:
                self.claims.release(key)
                raise
        # Saved outside the gate: a slow or locked history holds no item back.
        try:
            if run is not None:
                await self.history.save(run, key, self.secret)
        finally:
            self.claims.release(key)
        return result

    async def _run_item(
        self, item: Item, mode: Mode, key: str, earlier: Run | None
    ) -> tuple[ItemResult, Run | None]:
        """Run one item through `mode`: its result, and the run to save (None when none was
        made). The finished calls of an `earlier` run of it that was stopped are not paid for
        again; a run stopped now (Ctrl-C) is saved at once with the calls it finished."""
        started: list[Run] = []

        def began(run: Run) -> None:
            if self.batcher is not None:
                # Marked from its start, so its cost is the Batch API's wherever it is priced
                # (the run's own, its result's, the history's), and a stopped one is saved so.
                run.settings["batch"] = True
            started.append(run)

        try:
            result, run = await _run_item(self.engine, item, mode, self.own[mode], earlier, began)
        except (asyncio.CancelledError, KeyboardInterrupt):
            if started and started[0].calls:
                self.history.save_now(_stopped(started[0]), key, self.secret)
            raise
        return result, run

    def _rate_limited(self, item: Item, mode: Mode) -> ItemResult | None:
        """The item skipped, when the endpoint's rate limit will not reset for a long while."""
        limiter = self.limiter
        blocked = limiter.blocked_for() if limiter is not None else 0.0
        if not (blocked > 0 and limiter is not None):
            return None
        if not self.stopped:
            self.stopped.append(
                f"Rate limited on {limiter.blocked_limit}: stopped sending items "
                f"(the limit resets in {format_duration(blocked)}); rerun then to "
                "finish, what finished is kept"
            )
        return _refused(item, mode, "not sent: " + self.stopped[0], status="skipped")


async def default_concurrency(engine: Engine) -> int:
    """Runs at once by default: the endpoint's own slots where it says, else 4."""
    return await engine.client.server_slots() or DEFAULT_CONCURRENCY


async def _run_item(
    engine: Engine,
    item: Item,
    mode: Mode,
    options: dict[str, object],
    earlier: Run | None = None,
    on_run: Callable[[Run], None] | None = None,
) -> tuple[ItemResult, Run | None]:
    """Run one item through `mode`: its result, and the run to save (None when none was made)."""
    try:
        # Not saved by the engine: the eval saves each run once, tagged with its key.
        events = engine.open(
            mode, item.question, options, history=False, resume=earlier, on_run=on_run
        )
        run = await collect(events)
    except RunFailedError as error:
        run = error.run
    except InputError as error:
        # A question the engine refuses (too long, a control character) fails its own item
        # only; nothing was sent, so there is no run to keep.
        return _refused(item, mode, str(error)), None
    return _result(item, mode, run, reused=False), run


def _drawn(dataset: Dataset) -> str:
    if dataset.drawn_from is None:
        return ""
    return f" (a sample of the file's {dataset.drawn_from})"


def prepare_prices() -> None:
    """Load genai-prices' table now (about a second) rather than on the event loop."""
    import genai_prices  # noqa: F401


def _stopped(run: Run) -> Run:
    """`run` as it stands when its task is cancelled: settled as cancelled (the run's own
    lifecycle does so when the cancellation reaches it first), its finished calls' cost."""
    if run.status == "running":
        run.status = "cancelled"
        run.error = "cancelled before it finished"
        run.error_kind = "cancelled"
        run.usage = Usage.total([call.usage for call in run.calls])
    return run


# How often an item another eval is running is looked at again.
_CLAIM_POLL = 0.2


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


def batch_line(report: Report, summary: str) -> str:
    """The report's line on the Batch API: how the calls went, and when a run's cost is at
    list price (the table has no Batch API rate for the model), that the provider bills less."""
    if any(r.list_price for r in report.results):
        return f"{summary} {BILLS_LESS.format(model=report.model)}"
    return summary


def price_summaries(summaries: list[ModeSummary], provider: str) -> None:
    """Each mode's cost per item in words: '$0.0031, 6.1x single', 'unknown price'."""
    single = next((s.mean_cost for s in summaries if s.mode == "single"), None)
    for summary in summaries:
        summary.cost = cost_text(summary.mean_cost, provider)
        if summary.mean_cost is not None and summary.list_price:
            summary.cost += f" {AT_LIST_PRICE}"  # Batch API runs; the report's note says more
        if summary.mean_cost is not None and single and summary.mode != "single":
            summary.cost += f", {summary.mean_cost / single:.1f}x single"


def stage_answers(run: Run) -> list[tuple[str, str]]:
    """Every answer a run held on its way, in order, named by stage: each turn's answer and
    the synthesis's for refine, the final answer for steps, the one reply for single. Each
    mode's result names its own stages (`ModeResult.stages`)."""
    return run.result.stages(run.answer)


def _scored(answers: list[tuple[str, str]], item: Item) -> list[StageScore]:
    scores = []
    for stage, answer in answers:
        verdict = score(answer, item.answer, item.scorer, item.aliases)
        scores.append(StageScore(stage=stage, correct=verdict.correct, predicted=verdict.predicted))
    return scores


def _result(item: Item, mode: Mode, run: Run, *, reused: bool) -> ItemResult:
    verdict = score(run.answer, item.answer, item.scorer, item.aliases) if run.ok else None
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
        unreadable=verdict.unreadable if verdict else False,
        answer=run.answer,
        error=run.error,
        tokens=run.usage.total_tokens,
        cached_tokens=run.usage.cached_tokens,
        cost=run_cost(run),
        list_price=at_list_price(run),
        # The time the mode took, not the time it waited for a free slot at the server.
        seconds=round(max(0.0, run.seconds - run.queued_seconds), 3),
        queued_seconds=round(run.queued_seconds, 3),
        run_id=run.id,
        reused=reused,
        batch=bool(run.settings.get("batch")),
        stages=_scored(stage_answers(run), item) if run.ok else [],
        samples=samples,
        sample_accuracy=sum(s.correct for s in samples) / len(samples) if samples else None,
        confidence=run.result.confidence() if run.ok else None,
    )
