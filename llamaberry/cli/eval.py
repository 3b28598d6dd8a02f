"""`llamaberry eval`: score modes on a dataset, with a progress bar per mode, then write the
report. Its parts: check the command, load the data, run it (`EvalProgress` draws the bars),
write the report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from llamaberry.cli.options import (
    LazyCommand,
    endpoint_settings,
    mode_options,
    parse_modes,
    take_options,
)
from llamaberry.cli.running import fail, handle_errors, make_engine, run_async
from llamaberry.core.errors import InputError

if TYPE_CHECKING:
    from llamaberry.eval import Dataset, Fields, ItemResult, Report


@click.command("eval", cls=LazyCommand, modes=mode_options(), endpoint=True)
@click.argument("dataset", required=False, type=click.Path(dir_okay=False))
@click.option("--builtin", type=click.Choice(["tricky"]), help="Use a dataset that ships with us.")
@click.option("--modes", help="Comma-separated modes [default: see `llamaberry modes`].")
@click.option(
    "--concurrency",
    "-c",
    type=int,
    help="Runs at once [default: the server's slots where it says (llama.cpp), else 4].",
)
@click.option("--limit", "-k", type=int, help="Only the first K items.")
@click.option("--sample", type=int, help="A random subset of K items (reproducible with --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option(
    "--preset",
    type=click.Choice(["gsm8k", "math", "mmlu", "arc", "boolq", "triviaqa"]),
    help="Read DATASET as that benchmark's usual export [default: detected from its fields].",
)
@click.option("--question-field", default="question", show_default=True)
@click.option("--answer-field", default="answer", show_default=True)
@click.option(
    "--choices-field",
    help="Field holding a list of choices, or comma-separated fields with one each (A,B,C,D): "
    "the choices are shown lettered and scored by letter.",
)
@click.option(
    "--batch",
    is_flag=True,
    help="Send the calls through the provider's Batch API, a batch per round of calls "
    "(cheaper, outside the per-minute limits, slower); the same command resumes it.",
)
@click.option(
    "--batch-export",
    type=click.Path(dir_okay=False),
    help="Send nothing: write the next round's requests to this JSONL file, for your own "
    "batch runner (vLLM's run-batch); see `llamaberry batch`.",
)
@click.option(
    "--batch-poll",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between looks at a batch in progress.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    help="Directory for report.md, results.jsonl and chart.png [default eval-results/NAME].",
)
@handle_errors
def eval_command(
    dataset: str | None,
    builtin: str | None,
    modes: str | None,
    concurrency: int | None,
    limit: int | None,
    sample: int | None,
    seed: int,
    preset: str | None,
    question_field: str,
    answer_field: str,
    choices_field: str | None,
    batch: bool,
    batch_export: str | None,
    batch_poll: float,
    out: str | None,
    **params: Any,
) -> None:
    """Score modes on DATASET: JSON lines, a JSON array, CSV or TSV ({"question", "answer",
    "scorer"?} per record; the usual exports of GSM8K, MATH, MMLU, ARC, BoolQ and TriviaQA are
    detected, or named with --preset; other field names with --question-field and friends).

    Runs are saved as they finish; after Ctrl-C, the same command resumes where it stopped.
    """

    from llamaberry import eval as evaluation
    from llamaberry import modes as registry

    # Everything that can be wrong with the command is found before a bar is drawn or a
    # request is paid for.
    if (dataset is None) == (builtin is None):
        raise InputError("Give a DATASET.jsonl file or --builtin NAME (one of them).")
    check_batch_flags(params, batch, batch_export, batch_poll, concurrency)
    for flag, value in (("concurrency", concurrency), ("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise InputError(f"--{flag} must be at least 1 (got {value}).")
    fields = evaluation.Fields(
        question=question_field,
        answer=answer_field,
        choices=[f.strip() for f in (choices_field or "").split(",") if f.strip()],
    )
    data = load_data(builtin or dataset or "", builtin is not None, fields, sample, seed, preset)
    wanted = parse_modes(modes) or registry.default_names()
    chosen = take_options(params)
    registry.check_defaults(chosen)
    folder = Path(out) if out else None
    if folder is not None:
        check_writable(folder)
    progress = EvalProgress()
    plan = BatchPlan(batch_poll if batch else None, Path(batch_export) if batch_export else None)
    running = run_eval(params, data, wanted, chosen, folder, concurrency, limit, progress, plan)
    try:
        report, folder = run_async(running)
    except ExportedRound as exported:
        write_round(exported, plan.export)
        return
    except KeyboardInterrupt:
        click.echo(
            f"stopped after {progress.done} runs; they are saved, so the same command resumes "
            "from here.",
            err=True,
        )
        sys.exit(130)
    report.provenance += command_provenance(sample, seed)
    write_report(report, folder)
    if report.stopped:
        fail(f"stopped early: {report.stopped}.", 1)
    if not report.succeeded:
        failed = next((r for r in report.results if r.error), None)
        why = f" (first error: {failed.error})" if failed else ""
        fail(f"no run succeeded{why}.", 1)


def check_batch_flags(
    params: dict[str, Any],
    batch: bool,
    export: str | None,
    poll: float,
    concurrency: int | None,
) -> None:
    """Refuse --batch and --batch-export where they cannot go, before the data is read or a
    model starts: with each other or --concurrency, or on a provider whose row in the provider
    table has no Batch API."""
    if (batch or export) and concurrency is not None:
        raise InputError("--batch sends every run at once; leave out --concurrency.")
    if batch and export:
        raise InputError("Give --batch (send to the provider) or --batch-export FILE, not both.")
    if poll <= 0:
        raise InputError(f"--batch-poll must be above 0 (got {poll}).")
    if batch:
        from llamaberry.eval.batch import check_batch_api

        check_batch_api(endpoint_settings(params).provider)


def load_data(
    source: str,
    builtin: bool,
    fields: Fields,
    sample: int | None,
    seed: int,
    preset: str | None = None,
) -> Dataset:
    """The dataset (a file, or a built-in one by name), what was detected of its format and its
    bad lines said on stderr, sampled down to `sample` items when asked."""
    from llamaberry import eval as evaluation

    data = evaluation.load_dataset(source, builtin=builtin, fields=fields, preset=preset)
    if data.detected:
        click.echo(f"{data.name}: {data.detected}", err=True)
    for line in data.skipped[:10]:
        click.echo(f"warning: skipped {line}", err=True)
    if len(data.skipped) > 10:
        click.echo(f"warning: skipped {len(data.skipped) - 10} more bad lines.", err=True)
    if sample is not None:
        data = evaluation.sample(data, sample, seed)
    return data


def command_provenance(sample: int | None, seed: int) -> list[tuple[str, str]]:
    """The sample drawn and the command line (redacted: no key is ever shown)."""
    import shlex

    from llamaberry.core.redact import redact

    drawn = f"{sample} items, seed {seed}" if sample is not None else "all items (no --sample)"
    return [("sample", drawn), ("command", redact(shlex.join(["llamaberry", *sys.argv[1:]])))]


class EvalProgress:
    """A bar per mode on stderr, with the accuracy and the errors so far."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("accuracy {task.fields[accuracy]}"),
            TextColumn("unreadable {task.fields[unreadable]}"),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tallies: dict[str, list[int]] = {}  # mode -> [right, scored, errors, unreadable]
        self.tasks: dict[str, Any] = {}

    def add(self, mode: str, total: int) -> None:
        """A bar for `mode`, which will run `total` items."""
        self.tallies[mode] = [0, 0, 0, 0]
        self.tasks[mode] = self.bars.add_task(
            mode, total=total, accuracy="–", errors=0, unreadable=0
        )

    def on_result(self, result: ItemResult) -> None:
        """Count one finished item on its mode's bar."""
        tally = self.tallies[result.mode]
        if result.correct is None:
            tally[2] += 1
        else:
            tally[0] += result.correct
            tally[1] += 1
            tally[3] += result.unreadable
        shown = f"{tally[0] / tally[1]:.0%}" if tally[1] else "–"
        self.bars.update(
            self.tasks[result.mode],
            advance=1,
            accuracy=shown,
            errors=tally[2],
            unreadable=tally[3],
        )

    def on_batch(self, where: Any) -> None:
        """Say where the batch rounds stand, at most every few seconds."""
        import time

        now = time.monotonic()
        if now - getattr(self, "_said", 0.0) >= 5.0 or where.done + where.failed >= where.total:
            self._said = now
            self.console.print(where.line(), markup=False, highlight=False)

    def on_warning(self, line: str) -> None:
        """Print a warning above the bars."""
        self.console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)

    @property
    def done(self) -> int:
        """Items finished so far, over every mode."""
        return sum(t[1] + t[2] for t in self.tallies.values())


async def run_eval(
    params: dict[str, Any],
    data: Dataset,
    wanted: list[str],
    chosen: dict[str, Any],
    folder: Path | None,
    concurrency: int | None,
    limit: int | None,
    progress: EvalProgress,
    plan: BatchPlan | None = None,
) -> tuple[Report, Path]:
    """Run the eval on the endpoint `params` name, with the bars drawn; the report and the
    folder it goes to (named after the dataset and the model unless `folder` says)."""
    from llamaberry import eval as evaluation

    # history=False: the eval saves its runs itself, tagged for resuming, and off the loop.
    async with make_engine(params, history=False) as engine:
        if folder is None:
            folder = default_folder(data.name, engine.model)
        total = min(limit, len(data.items)) if limit else len(data.items)
        batcher = await through_batches(engine, plan, progress) if plan else None
        if concurrency is None and batcher is None:
            concurrency = await evaluation.default_concurrency(engine)
            if await engine.client.server_slots() is not None:
                click.echo(f"concurrency {concurrency}: the server's slots", err=True)
        for mode in wanted:
            progress.add(mode, total)
        with progress.bars:
            evaluating = evaluation.evaluate(
                engine,
                data,
                wanted,  # type: ignore[arg-type]
                concurrency=concurrency,
                limit=limit,
                on_result=progress.on_result,
                on_warning=progress.on_warning,
                batcher=batcher,
                **chosen,
            )
            report = await until_exported(evaluating, batcher)
        return report, folder


class BatchPlan(NamedTuple):
    """How an eval's calls go: `poll` seconds between looks at the provider's batches
    (--batch), or the file the next round is written to (--batch-export); neither: at once."""

    poll: float | None
    export: Path | None

    def __bool__(self) -> bool:
        return self.poll is not None or self.export is not None


class ExportedRound(Exception):
    """--batch-export wrote nothing upstream: here are the round's request lines."""

    def __init__(self, lines: list[dict[str, Any]], round_: int) -> None:
        super().__init__(f"round {round_}: {len(lines)} requests")
        self.lines = lines
        self.round = round_


async def until_exported(evaluating: Any, batcher: Any) -> Report:
    """The eval's report; with --batch-export, `ExportedRound` as soon as a round is written
    (the runs wait on answers that come back only through `llamaberry batch import`)."""
    import asyncio
    import contextlib

    task = asyncio.ensure_future(evaluating)
    if batcher is None or batcher.backend is not None:
        return await task
    exported = asyncio.ensure_future(batcher.exported_round.wait())
    await asyncio.wait({task, exported}, return_when=asyncio.FIRST_COMPLETED)
    exported.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ExportedRound(batcher.exported, batcher.rounds)
    return task.result()


def write_round(exported: ExportedRound, path: Path | None) -> None:
    """The round's requests as JSONL at `path`, and what to do next."""
    import orjson

    assert path is not None
    try:
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in exported.lines))
    except OSError as error:
        raise InputError(f"Cannot write {path}: {error.strerror or error}.") from None
    click.echo(
        f"round {exported.round}: wrote {len(exported.lines)} requests to {path}. Run them "
        f"(vllm run-batch -i {path} -o OUTPUT.jsonl --model MODEL), then "
        "`llamaberry batch import OUTPUT.jsonl`, then this command again for the next round.",
        err=True,
    )


async def through_batches(engine: Any, plan: BatchPlan, progress: EvalProgress) -> Any:
    """Put the engine's calls on the provider's Batch API (or, exporting, on a file); one line
    if it has none."""
    from llamaberry.eval.batch import EXPORTED, BatchClient, Batcher, check_batch_api
    from llamaberry.store.batches import BatchLedger

    inner = engine.client
    if plan.export is not None:
        batcher = Batcher(ledger=BatchLedger(EXPORTED), backend=None)
        engine.client = BatchClient(inner, batcher)
        return batcher
    check_batch_api(engine.settings.provider)  # the row's word (also asked before the engine)
    endpoint = f"{engine.settings.provider} {engine.settings.base_url or ''}".strip()
    batcher = Batcher(
        ledger=BatchLedger(endpoint),
        backend=inner.sdk,
        poll=plan.poll or 10.0,
        on_progress=progress.on_batch,
    )
    await batcher.check()
    engine.client = BatchClient(inner, batcher)
    return batcher


def default_folder(dataset: str, model: str) -> Path:
    """eval-results/DATASET-MODEL, spelt for any file system, checked writable."""

    name = f"{dataset}-{model}"
    folder = Path("eval-results") / "".join(c if c.isalnum() or c in "-." else "-" for c in name)
    check_writable(folder)
    return folder


def check_writable(folder: Path) -> None:
    """Fail now, before any request is paid for, when the report could not be written there."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(
            f"Cannot write the report to {folder}: {error.strerror or error}."
        ) from None


def write_report(report: Report, folder: Path) -> None:
    """report.md and results.jsonl into `folder`, the report on stdout, then chart.png."""
    from llamaberry import eval as evaluation

    try:
        folder.mkdir(parents=True, exist_ok=True)
        markdown = evaluation.report_markdown(report)
        (folder / "report.md").write_text(markdown, encoding="utf-8")
        evaluation.write_results(report, folder / "results.jsonl")
    except OSError as error:
        raise InputError(f"Cannot write the report to {folder}: {error.strerror}.") from None
    click.echo(markdown, nl=False)
    if report.reused:
        click.echo(
            f"{report.reused} of {len(report.results)} runs reused from the history (made with "
            "the same settings and prompts)",
            err=True,
        )
    written = "report.md and results.jsonl"
    try:
        evaluation.draw_chart(report, folder / "chart.png")
        written = "report.md, results.jsonl and chart.png"
    except (
        Exception
    ) as error:  # the numbers are already saved; a plotting problem must not hide them
        click.echo(f"warning: chart.png not drawn: {error}", err=True)
    click.echo(f"wrote {written} to {folder}", err=True)
