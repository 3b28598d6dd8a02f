"""The `llamaberry` command line.

Kept light on purpose: the SDKs are imported when a request is made and gradio only by `ui`,
so `llamaberry --help` answers at once. The modes, their `--mode` choices and their option
flags come from the registry (`modes.py`), loaded only when a command that takes them is used.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin

import click

from llamaberry.core.errors import InputError, LlamaberryError


class RegistryCommand(click.Command):
    """A command with parameters read from the mode registry.

    They are built the first time the command parses or shows its help, so the registry (and
    pydantic with it) is never imported by `llamaberry --help` or by the other commands.
    """

    def __init__(self, *args: Any, registry_params: Callable[[], list[click.Parameter]], **kw: Any):
        super().__init__(*args, **kw)
        self._registry_params: Callable[[], list[click.Parameter]] | None = registry_params

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._registry_params is not None:
            made, self._registry_params = self._registry_params(), None
            # After the arguments, before the shared endpoint options.
            at = next((i for i, p in enumerate(self.params) if isinstance(p, click.Option)), 0)
            self.params[at:at] = made
        return super().get_params(ctx)


class RegistryGroup(RegistryCommand, click.Group):
    """A command group with parameters read from the mode registry (see `RegistryCommand`)."""


def mode_choice(
    *, with_default: bool = False, **kwargs: Any
) -> Callable[[], list[click.Parameter]]:
    """A `--mode` option whose choices are the registered modes (and the registry's default
    mode as its default, `with_default`)."""

    def make() -> list[click.Parameter]:
        from llamaberry import modes

        if with_default:
            kwargs.update(default=modes.DEFAULT_MODE, show_default=True)
        return [click.Option(["--mode"], type=click.Choice(modes.names()), **kwargs)]

    return make


def mode_options(
    *extra: Callable[[], list[click.Parameter]],
) -> Callable[[], list[click.Parameter]]:
    """One flag per mode option (`--turns`, `--samples`...), typed but not range-checked: the
    option's model checks the range, so every way in gives the same error line."""

    def make() -> list[click.Parameter]:
        from llamaberry import modes
        from llamaberry.core import options

        made = [param for factory in extra for param in factory()]
        for name, (field, takers) in modes.option_fields().items():
            kind = options.plain_type(field)
            if get_origin(kind) is Literal:
                click_type: Any = click.Choice([str(c) for c in get_args(kind)])
            else:
                click_type = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
            flags = [f"--{name.replace('_', '-')}"]
            declared = field.json_schema_extra
            short = declared.get("short_flag") if isinstance(declared, dict) else None
            if isinstance(short, str):
                flags.append(short)
            help_text = (
                f"{field.description or name} For {', '.join(takers)}: "
                f"{options.describe(field)} [default {field.default}; "
                f"env {options.env_name(name)}]."
            )
            made.append(click.Option(flags, name, type=click_type, help=help_text))
        return made

    return make


def take_options(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the mode options a command received (the ones given) out of its parameters."""
    from llamaberry import modes

    return {
        name: value
        for name in modes.option_fields()
        if (value := params.pop(name, None)) is not None
    }


def endpoint_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and tune the model endpoint, shared by every command."""
    options = [
        click.option(
            "--model",
            "-m",
            help="Model id, or a .gguf file for --provider local "
            "[env LLAMABERRY_MODEL; default openai/gpt-oss-120b].",
        ),
        click.option(
            "--provider",
            type=click.Choice(["groq", "openai", "local"]),
            help="groq (default with GROQ_API_KEY), openai for any OpenAI-compatible server, or "
            "local to run a GGUF model here (default without a key) [env LLAMABERRY_PROVIDER].",
        ),
        click.option(
            "--base-url",
            help="Endpoint URL: a host for groq, a .../v1 URL for openai [env LLAMABERRY_BASE_URL].",
        ),
        click.option("--temperature", type=float, help="Sampling temperature, 0 to 2."),
        click.option(
            "--max-tokens",
            type=int,
            help="Completion-token budget per call, hidden reasoning included [default 4096].",
        ),
        click.option(
            "--reasoning-effort",
            type=click.Choice(["low", "medium", "high"]),
            help="How hard a reasoning model thinks before it answers.",
        ),
        click.option(
            "--timeout",
            type=float,
            help="Most seconds one call may take, retries included [default 120].",
        ),
        click.option(
            "--run-timeout",
            type=float,
            help="Most seconds a whole run may take [default: no bound beyond --timeout].",
        ),
        click.option("--rpm", type=int, help="Requests-per-minute limit shared by all runs."),
        click.option("--tpm", type=int, help="Tokens-per-minute budget shared by all runs."),
        click.option(
            "--context",
            type=int,
            help="The model's context window in tokens, if the server does not report it; "
            "0 turns the check off [env LLAMABERRY_CONTEXT].",
        ),
        click.option(
            "--loop-guard/--no-loop-guard",
            default=None,
            help="Stop a reply that keeps repeating itself [default on; env LLAMABERRY_LOOP_GUARD].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


ENDPOINT_KEYS = (
    "model",
    "provider",
    "base_url",
    "temperature",
    "max_tokens",
    "reasoning_effort",
    "timeout",
    "run_timeout",
    "rpm",
    "tpm",
    "context",
    "loop_guard",
)


def make_engine(options: dict[str, Any], **extra: Any):
    """Build an engine from the endpoint options a command received."""
    from llamaberry.engine import Engine  # pydantic and friends load only when a command runs
    from llamaberry.providers.clients import OPENAI_API_URL

    engine = Engine(**{k: options.get(k) for k in ENDPOINT_KEYS}, **extra)
    if engine.settings.provider == "openai" and engine.settings.base_url is None:
        # Said out loud: a forgotten --base-url would otherwise send every question to OpenAI.
        click.echo(
            f"note: no --base-url, so this uses OpenAI's own API ({OPENAI_API_URL}); for a "
            "local server give --base-url http://HOST:PORT/v1 or set OPENAI_BASE_URL.",
            err=True,
        )
    if engine.settings.embedded:
        server = getattr(engine.client, "server", None)
        started = f"; llama.cpp started in {server.startup_seconds:.1f}s" if server else ""
        click.echo(embedded_notice(engine.model) + started + ".", err=True)
    return engine


def embedded_notice(model: str) -> str:
    """The one line that says the embedded model runs, and how to use Groq instead."""
    return (
        f"note: no GROQ_API_KEY, so this runs on the embedded {model}, a tiny local demo "
        "model, not a reasoner; set GROQ_API_KEY to use Groq"
    )


def fail(error: BaseException | str, code: int = 1) -> NoReturn:
    """Print one line for the user on stderr and exit; never a traceback."""
    from llamaberry.core.redact import redact

    click.echo(redact(f"error: {error}"), err=True)
    sys.exit(code)


def echo_json(value: Any) -> None:
    """Print `value` as one line of JSON, with every known key blanked out."""
    from llamaberry.core.redact import redact_data

    click.echo(json.dumps(redact_data(value), ensure_ascii=False))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line and an exit code: 2 for bad input, 1 for the rest."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as error:
            fail(error, 2)
        except LlamaberryError as error:
            fail(error, 1)
        except KeyboardInterrupt:
            click.echo("cancelled.", err=True)
            sys.exit(130)

    return wrapper


T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, woken by a Ctrl-C whichever of the process's threads takes it."""
    return asyncio.run(_woken_by_signals(main))


async def _woken_by_signals(main: Coroutine[Any, Any, T]) -> T:
    # A Ctrl-C is sent to the process, and the kernel hands it to whichever thread gets to it
    # first: on a busy machine now and then rich's refresh thread or an executor's, while the
    # main thread sleeps in the event loop's select(). Python runs the handler (asyncio's,
    # which cancels the run) only in the main thread, once that thread runs again: with every
    # call waiting on a silent server, not before the next timer (a call's 120 s timeout).
    # The wakeup fd is written by whichever thread takes the signal, and wakes the loop.
    import signal
    import socket

    if sys.platform == "win32":  # one thread takes Ctrl-C there; the proactor has no add_reader
        return await main
    loop = asyncio.get_running_loop()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: signals are not ours to handle
        reader.close()
        writer.close()
        return await main
    loop.add_reader(reader.fileno(), _drain, reader)
    try:
        return await main
    finally:
        signal.set_wakeup_fd(previous)
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()


def _drain(reader: Any) -> None:
    # Only the wake-up matters: the signal's own handler runs in the main thread now.
    try:
        while reader.recv(4096):
            pass
    except OSError:  # BlockingIOError once empty
        pass


def clip(text: str, lines: int = 8, chars: int = 600) -> str:
    """A long answer cut to fit a table cell; --json and the history keep it whole."""
    kept = "\n".join(text.strip().splitlines()[:lines])[:chars]
    return kept if kept == text.strip() else kept.rstrip() + " …"


def read_question(question: str) -> str:
    """The question argument, or stdin when it is `-`."""
    if question != "-":
        return question
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"stdin is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})."
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamaberry")
def cli() -> None:
    """llamaberry: make a fast model think harder, and measure whether it helped.

    `llamaberry modes` lists the ways it can think, with their options. Set GROQ_API_KEY to
    use Groq; without one, a tiny model embedded in the package runs on this machine.
    --provider openai --base-url reaches any OpenAI-compatible server; --provider local --model
    FILE.gguf serves a GGUF model of your own.
    """
    show_warnings()


class WarningLine(logging.Handler):
    """Shows the engine's warnings as one `warning: ...` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def show_warnings() -> None:
    """Route the `llamaberry` logger's warnings to stderr (once per process)."""
    logger = logging.getLogger("llamaberry")
    if not any(isinstance(handler, WarningLine) for handler in logger.handlers):
        handler = WarningLine(logging.WARNING)
        logger.addHandler(handler)


@cli.command(
    cls=RegistryCommand,
    registry_params=mode_options(
        mode_choice(with_default=True, help="How the model thinks (see `llamaberry modes`).")
    ),
)
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of prose.")
@endpoint_options
@handle_errors
def ask(question: str, mode: str, as_json: bool, **params: Any) -> None:
    """Ask QUESTION (or - to read it from stdin) and show the thinking as it streams."""
    from llamaberry.cli.render import TerminalView

    question = read_question(question)
    chosen = take_options(params)

    settled: list[Any] = []  # the run as it ended, even when it ended by an interrupt

    async def go():
        async with make_engine(params, on_finish=settled.append) as engine:
            view = TerminalView(quiet=as_json)
            async for event in engine.stream(mode, question, **chosen):
                view.show(event)
            return view.run

    try:
        run = run_async(go())
    except KeyboardInterrupt:
        if as_json and settled:  # a script still gets what finished, as a failed run gives it
            echo_json(settled[-1].public_dict())
        raise
    if as_json:
        echo_json(run.public_dict())
    if run.status != "ok":
        fail(run.error or "the run failed", 1)


@cli.command("modes")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of prose.")
def modes_command(as_json: bool) -> None:
    """List the modes, what each does, and its options with their ranges and defaults."""
    from llamaberry import modes
    from llamaberry.core import options

    listed: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "description": spec.description,
            "default": spec.default,
            "options": {
                name: {
                    "description": field.description,
                    "accepts": options.describe(field),
                    "default": field.default,
                    "env": options.env_name(name),
                }
                for name, field in spec.options.model_fields.items()
            },
        }
        for spec in modes.MODES.values()
    ]
    if as_json:
        click.echo(json.dumps(listed, ensure_ascii=False))
        return
    for entry in listed:
        click.echo(f"{entry['name']}: {entry['description']}")
        for name, about in entry["options"].items():
            click.echo(
                f"  --{name.replace('_', '-')}: {about['description']} {about['accepts']}, "
                f"default {about['default']} (env {about['env']})"
            )


@cli.command()
@endpoint_options
@handle_errors
def models(**options: Any) -> None:
    """List the models the endpoint serves (the configured one is starred)."""

    async def go() -> tuple[str, list[str]]:
        async with make_engine(options) as engine:
            return engine.model, await engine.models()

    current, names = run_async(go())
    for name in names:
        click.echo(f"{'*' if name == current else ' '} {name}")
    if current not in names:
        click.echo(f"note: the configured model '{current}' is not in this list.", err=True)


# -- history, compare, eval ---------------------------------------------------------------------


def parse_modes(text: str | None) -> list[str] | None:
    """'single,refine' -> ['single', 'refine']; None stays None (the default set)."""
    from llamaberry import modes as registry

    if text is None:
        return None
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in registry.MODES]
    if unknown or not modes:
        raise InputError(
            f"--modes takes a comma-separated list of {', '.join(registry.MODES)} (got {text!r})."
        )
    return modes


@cli.group(
    cls=RegistryGroup,
    invoke_without_command=True,
    registry_params=mode_choice(help="Only runs of this mode."),
)
@click.option("--model", help="Only runs of this model.")
@click.option("--search", "-s", help="Only runs whose question or answer contains this text.")
@click.option(
    "--status", type=click.Choice(["ok", "failed", "cancelled", "interrupted", "running"])
)
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_context
@handle_errors
def history(ctx: click.Context, as_json: bool, limit: int, **filters: Any) -> None:
    """List saved runs, newest first. `history show ID` opens one; `history export` saves them.

    Runs are kept in $LLAMABERRY_HOME/history.db; set LLAMABERRY_HISTORY=0 to stop saving.
    """
    if ctx.invoked_subcommand is not None:
        return
    from llamaberry.store import Store

    with Store() as store:
        rows = store.list_runs(limit=limit, **filters)
    if as_json:
        echo_json([row.__dict__ for row in rows])
        return
    if not rows:
        click.echo("No runs saved yet." if not any(filters.values()) else "No run matches.")
        return
    # Plain fixed-width lines: they survive pipes, grep and narrow terminals alike.
    line = "{:<12}  {:<16}  {:<6}  {:<9}  {:>7}  {:>7}  {}  {}"
    click.echo(
        line.format(
            "id", "started (UTC)", "mode", "status", "tokens", "seconds", "model", "question"
        )
    )
    for row in rows:
        click.echo(
            line.format(
                row.id,
                row.started_at[:16].replace("T", " "),
                row.mode,
                row.status,
                f"{row.total_tokens:,}",
                f"{row.seconds:.1f}",
                row.model,
                " ".join(row.question.split())[:70],
            )
        )


@history.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole run, call log included.")
@handle_errors
def history_show(run_id: str, as_json: bool) -> None:
    """Show the run RUN_ID (a unique prefix of it is enough)."""
    from llamaberry.core.redact import redact_model
    from llamaberry.store import Store, run_markdown

    with Store() as store:
        run = redact_model(store.get(run_id))
    if as_json:
        echo_json(run.model_dump(mode="json"))
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(run_markdown(run)))
    else:
        click.echo(run_markdown(run), nl=False)


@history.command(
    "export", cls=RegistryCommand, registry_params=mode_choice(help="Only runs of this mode.")
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "md"]), default="jsonl")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write [stdout].")
@click.option("--model")
@click.option("--search", "-s")
@handle_errors
def history_export(fmt: str, output: str | None, **filters: Any) -> None:
    """Export saved runs, newest first, as JSON lines or one Markdown document."""
    from llamaberry.store import Store, export_jsonl, export_markdown

    writer = export_jsonl if fmt == "jsonl" else export_markdown
    with Store() as store:
        chunks = writer(store.runs(**filters))
        if output is None:
            for chunk in chunks:
                click.echo(chunk, nl=False)
            return
        try:
            with open(output, "w", encoding="utf-8") as out:
                out.writelines(chunks)
        except OSError as error:
            raise InputError(f"Cannot write {output}: {error.strerror}.") from None


@cli.command(cls=RegistryCommand, registry_params=mode_options())
@click.argument("question")
@click.option("--modes", help="Comma-separated modes [default: see `llamaberry modes`].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@endpoint_options
@handle_errors
def compare(question: str, modes: str | None, as_json: bool, **params: Any) -> None:
    """Run QUESTION through several modes at once; show answer, seconds and tokens side by side."""
    from rich.console import Console
    from rich.table import Table

    from llamaberry import modes as registry
    from llamaberry.compare import compare as run_compare

    question = read_question(question)
    wanted = parse_modes(modes) or registry.default_names()
    chosen = take_options(params)

    async def go():
        async with make_engine(params) as engine:
            with Console(stderr=True).status(f"Running {', '.join(wanted)} at once…"):
                return await run_compare(engine, question, wanted, **chosen)

    result = run_async(go())
    if as_json:
        echo_json(result.public_dict())
    else:
        table = Table(show_lines=True)
        table.add_column("mode", no_wrap=True)
        table.add_column("answer")
        table.add_column("seconds", justify="right")
        table.add_column("tokens", justify="right")
        for entry in result.entries:
            answer = (
                clip(entry.answer or "")
                if entry.status == "ok"
                else f"{entry.status}: {entry.error}"
            )
            table.add_row(
                entry.label + (" *" if entry.derived else ""),
                answer or "",
                f"{entry.seconds:.1f}",
                f"{entry.usage.total_tokens:,}",
            )
        console = Console(highlight=False)
        console.print(table)
        console.print(
            f"[dim]{result.model} · wall time {result.seconds:.1f}s (the modes ran at once)"
            + (
                " · * taken from the refine run, no extra call"
                if any(e.derived for e in result.entries)
                else ""
            )
            + "[/dim]"
        )
    failed = [e for e in result.entries if e.status != "ok"]
    if failed:
        fail(RuntimeError(f"{failed[0].label} {failed[0].status}: {failed[0].error}"), 1)


@cli.command("eval", cls=RegistryCommand, registry_params=mode_options())
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
@click.option("--question-field", default="question", show_default=True)
@click.option("--answer-field", default="answer", show_default=True)
@click.option(
    "--choices-field",
    help="Field holding a list of choices, or comma-separated fields with one each (A,B,C,D): "
    "the choices are shown lettered and scored by letter.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    help="Directory for report.md, results.jsonl and chart.png [default eval-results/NAME].",
)
@endpoint_options
@handle_errors
def eval_command(
    dataset: str | None,
    builtin: str | None,
    modes: str | None,
    concurrency: int | None,
    limit: int | None,
    sample: int | None,
    seed: int,
    question_field: str,
    answer_field: str,
    choices_field: str | None,
    out: str | None,
    **params: Any,
) -> None:
    """Score modes on DATASET: JSON lines or a CSV with a header ({"question", "answer",
    "scorer"?} per record; other field names with --question-field and friends).

    Runs are saved as they finish; after Ctrl-C, the same command resumes where it stopped.
    """
    from pathlib import Path

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from llamaberry import eval as evaluation

    if (dataset is None) == (builtin is None):
        raise InputError("Give a DATASET.jsonl file or --builtin NAME (one of them).")
    # Everything that can be wrong with the command is found before a bar is drawn or a
    # request is paid for.
    if concurrency is not None and concurrency < 1:
        raise InputError(f"--concurrency must be at least 1 (got {concurrency}).")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit}).")
    if sample is not None and sample < 1:
        raise InputError(f"--sample must be at least 1 (got {sample}).")
    fields = evaluation.Fields(
        question=question_field,
        answer=answer_field,
        choices=[f.strip() for f in (choices_field or "").split(",") if f.strip()],
    )
    data = evaluation.load_dataset(
        builtin or dataset,  # type: ignore[arg-type]
        builtin=builtin is not None,
        fields=fields,
    )
    for line in data.skipped[:10]:
        click.echo(f"warning: skipped {line}", err=True)
    if len(data.skipped) > 10:
        click.echo(f"warning: skipped {len(data.skipped) - 10} more bad lines.", err=True)
    if sample is not None:
        data = evaluation.sample(data, sample, seed)
    from llamaberry import modes as registry

    wanted = parse_modes(modes) or registry.default_names()
    chosen = take_options(params)
    registry.check_defaults(chosen)
    folder = Path(out) if out else None
    if folder is not None:
        check_writable(folder)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("accuracy {task.fields[accuracy]}"),
        TextColumn("errors {task.fields[errors]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tallies: dict[str, list[int]] = {}  # mode -> [right, scored, errors]

    def on_result(result: Any) -> None:
        tally = tallies[result.mode]
        if result.correct is None:
            tally[2] += 1
        else:
            tally[0] += result.correct
            tally[1] += 1
        shown = f"{tally[0] / tally[1]:.0%}" if tally[1] else "–"
        progress.update(tasks[result.mode], advance=1, accuracy=shown, errors=tally[2])

    tasks: dict[str, Any] = {}

    def on_warning(line: str) -> None:
        console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)

    async def go():
        # history=False: the eval saves its runs itself, tagged for resuming, and off the loop.
        async with make_engine(params, history=False) as engine:
            nonlocal folder
            if folder is None:
                name = f"{data.name}-{engine.model}"
                folder = Path("eval-results") / "".join(
                    c if c.isalnum() or c in "-." else "-" for c in name
                )
                check_writable(folder)
            total = min(limit, len(data.items)) if limit else len(data.items)
            at_once = concurrency
            if at_once is None:
                at_once = await evaluation.default_concurrency(engine)
                slots = await engine.client.server_slots()
                if slots is not None:
                    click.echo(f"concurrency {at_once}: the server's slots", err=True)
            for mode in wanted:
                tallies[mode] = [0, 0, 0]
                tasks[mode] = progress.add_task(mode, total=total, accuracy="–", errors=0)
            with progress:
                return await evaluation.evaluate(
                    engine,
                    data,
                    wanted,  # type: ignore[arg-type]
                    concurrency=at_once,
                    limit=limit,
                    on_result=on_result,
                    on_warning=on_warning,
                    **chosen,
                )

    try:
        report = run_async(go())
    except KeyboardInterrupt:
        done = sum(t[1] + t[2] for t in tallies.values())
        click.echo(
            f"stopped after {done} runs; they are saved, so the same command resumes from here.",
            err=True,
        )
        sys.exit(130)
    assert folder is not None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        markdown = evaluation.report_markdown(report)
        (folder / "report.md").write_text(markdown, encoding="utf-8")
        evaluation.write_results(report, folder / "results.jsonl")
    except OSError as error:
        raise InputError(f"Cannot write the report to {folder}: {error.strerror}.") from None
    click.echo(markdown, nl=False)
    written = "report.md and results.jsonl"
    try:
        evaluation.draw_chart(report, folder / "chart.png")
        written = "report.md, results.jsonl and chart.png"
    except (
        Exception
    ) as error:  # the numbers are already saved; a plotting problem must not hide them
        click.echo(f"warning: chart.png not drawn: {error}", err=True)
    click.echo(f"wrote {written} to {folder}", err=True)
    if report.stopped:
        fail(f"stopped early: {report.stopped}.", 1)
    if not report.succeeded:
        failed = next((r for r in report.results if r.error), None)
        why = f" (first error: {failed.error})" if failed else ""
        fail(f"no run succeeded{why}.", 1)


def check_writable(folder: Any) -> None:
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


def load_ui_module():
    """Import the web UI (the `llamaberry_ui` package), which needs the `ui` extra."""
    import importlib.util

    if (
        importlib.util.find_spec("gradio") is None
        or importlib.util.find_spec("llamaberry_ui") is None
    ):
        raise LlamaberryError(
            "The web UI needs the ui extra: pip install 'llamaberry[ui]' "
            "(in a clone, `uv run llamaberry ui` has it)."
        )
    from llamaberry_ui import app

    return app


@cli.command(cls=RegistryCommand, registry_params=mode_options())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=7860, show_default=True, help="Port to listen on.")
@click.option("--share", is_flag=True, help="Also publish a public gradio.live link.")
@click.option("--auth", metavar="USER:PASSWORD", help="Require this login to open the page.")
@endpoint_options
@handle_errors
def ui(host: str, port: int, share: bool, auth: str | None, **params: Any) -> None:
    """Start the web UI (a tab per mode, and compare) on http://HOST:PORT.

    Mode options given here are the page's defaults."""
    from llamaberry import modes
    from llamaberry.core.settings import Settings

    defaults = take_options(params)
    modes.check_defaults(defaults)

    credentials = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise InputError("--auth must be USER:PASSWORD, both non-empty.")
        credentials = (user, password)
    settings = Settings.load(**{k: params.get(k) for k in ENDPOINT_KEYS})
    if settings.embedded:
        click.echo(embedded_notice(settings.model) + ".", err=True)
    local = host in ("localhost", "::1") or host.startswith("127.")
    if share or not local:
        where = "a public gradio.live link" if share else f"every machine that can reach {host}"
        click.echo(
            f"warning: the UI will be open to {where}; anyone who opens it can run questions "
            "on this server's API key"
            + ("." if credentials else ". Add --auth USER:PASSWORD to require a login."),
            err=True,
        )
    app = load_ui_module()  # gradio is imported here, never by the other commands
    try:
        # The History tab lists every saved run, so it is only shown on this machine.
        page = app.build_app(settings, show_history=local and not share, options=defaults)
        app.serve(page, host=host, port=port, share=share, auth=credentials)
    except OSError as error:
        raise LlamaberryError(f"Cannot serve on {host}:{port}: {error}") from None


@cli.command(
    cls=RegistryCommand,
    registry_params=mode_options(),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    "serve_key",
    envvar="LLAMABERRY_SERVE_KEY",
    help="Require `Authorization: Bearer KEY` on every request [env LLAMABERRY_SERVE_KEY].",
)
@click.option(
    "--reasoning-field",
    type=click.Choice(["reasoning_content", "reasoning", "both"]),
    default="reasoning_content",
    show_default=True,
    help="The message field that carries the intermediate work.",
)
@endpoint_options
@handle_errors
def serve(
    host: str,
    port: int,
    serve_key: str | None,
    reasoning_field: str,
    **options: Any,
) -> None:
    """Serve every mode as a model behind an OpenAI-compatible API on http://HOST:PORT/v1.

    Point any OpenAI client at it and pick a mode as the model name (`refine`, `steps`,
    `single`, ...), or MODE/UPSTREAM_MODEL to choose the upstream model too.
    """
    from llamaberry.core.settings import Settings

    try:
        from llamaberry import serve as endpoint
    except ImportError as error:  # starlette/uvicorn come with the package; say so if missing
        raise LlamaberryError(f"The server needs starlette and uvicorn: {error}") from None

    defaults = take_options(options)
    settings = Settings.load(**{k: options.get(k) for k in ENDPOINT_KEYS})
    # Build the default engine now: a missing key, a bad URL or a bad option fails here, not
    # per request.
    endpoint.Gateway(settings, history=False, options=defaults).engine()
    local = host in ("localhost", "::1") or host.startswith("127.")
    if not local and not serve_key:
        click.echo(
            f"warning: serving on {host} without --api-key: anyone who can reach this machine "
            "can run questions on your upstream key. Set --api-key or LLAMABERRY_SERVE_KEY.",
            err=True,
        )

    def ready(url: str) -> None:
        click.echo(
            f"llamaberry serve: {url} · modes: {', '.join(endpoint.mode_names())} · upstream: "
            f"{settings.provider} {settings.model}"
            + (" · bearer key required" if serve_key else ""),
            err=True,
        )

    try:
        endpoint.serve(
            settings,
            host=host,
            port=port,
            api_key=serve_key,
            reasoning_field=reasoning_field,  # type: ignore[arg-type]
            on_ready=ready,
            options=defaults,
        )
    except OSError as error:
        raise LlamaberryError(f"Cannot serve on {host}:{port}: {error}") from None


def stop_like_ctrl_c() -> None:
    """Make SIGTERM and SIGHUP stop a command the way Ctrl-C does.

    Their default is to kill the process on the spot, losing the run in flight; raised as
    SIGINT instead, asyncio cancels the run, which settles it as cancelled (and saves it)
    before the command exits with 130.
    """
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        # Whatever handles Ctrl-C now (asyncio's, which cancels the run, or Python's default)
        # handles this too. A process started with Ctrl-C ignored (a background job) still
        # stops on SIGTERM: by the KeyboardInterrupt that asyncio.run then cleans up after.
        current = signal.getsignal(signal.SIGINT)
        if callable(current):
            current(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)  # Windows has no SIGHUP
        if number is not None:
            signal.signal(number, interrupt)


def main() -> None:
    """Entry point of the `llamaberry` script."""
    stop_like_ctrl_c()
    cli(prog_name="llamaberry")
