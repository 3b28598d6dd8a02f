"""`llamaberry history`: the saved runs, listed, shown one at a time, or exported."""

from __future__ import annotations

import sys
from typing import Any

import click

from llamaberry.cli.options import LazyCommand, LazyGroup, mode_choice
from llamaberry.cli.running import echo_json, handle_errors
from llamaberry.core.errors import InputError
from llamaberry.core.terminal import for_terminal

# More runs than anyone keeps; a larger --limit is a usage error, not a database overflow.
MAX_LIMIT = 1_000_000_000


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    modes=mode_choice(help="Only runs of this mode."),
)
@click.option("--model", help="Only runs of this model.")
@click.option("--search", "-s", help="Only runs whose question or answer contains this text.")
@click.option(
    "--status", type=click.Choice(["ok", "failed", "cancelled", "interrupted", "running"])
)
@click.option("--limit", "-n", type=click.IntRange(0, MAX_LIMIT), default=20, show_default=True)
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
                for_terminal(row.model),
                for_terminal(" ".join(row.question.split())[:70]),
            )
        )


@history.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole run, call log included.")
@handle_errors
def history_show(run_id: str, as_json: bool) -> None:
    """Show the run RUN_ID (a unique prefix of it is enough)."""
    from llamaberry.core.prices import with_list_price
    from llamaberry.core.redact import redact_model
    from llamaberry.store import Store, run_markdown

    with Store() as store:
        run = redact_model(store.get(run_id))
    if as_json:
        echo_json(with_list_price(run).model_dump(mode="json"))
        return
    # What the model wrote is shown, never obeyed: no escape sequence reaches the terminal.
    text = for_terminal(run_markdown(run))
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        click.echo(text, nl=False)


@history.command("export", cls=LazyCommand, modes=mode_choice(help="Only runs of this mode."))
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
            # Markdown read on a terminal is shown, never obeyed, as `history show` is; piped
            # or written to a file it stays as the model wrote it (JSON escapes its controls).
            shown = fmt == "md" and sys.stdout.isatty()
            for chunk in chunks:
                click.echo(for_terminal(chunk) if shown else chunk, nl=False)
            return
        try:
            with open(output, "w", encoding="utf-8") as out:
                out.writelines(chunks)
        except OSError as error:
            raise InputError(f"Cannot write {output}: {error.strerror}.") from None
