"""`llamaberry compare`: one question through several modes at once, side by side."""

from __future__ import annotations

from typing import Any

import click

from llamaberry.cli.options import (
    LazyCommand,
    mode_options,
    parse_modes,
    read_question,
    take_options,
)
from llamaberry.cli.running import (
    check_usage,
    echo_json,
    fail,
    handle_errors,
    make_engine,
    run_async,
)


@click.command(cls=LazyCommand, modes=mode_options(), endpoint=True)
@click.argument("question")
@click.option("--modes", help="Comma-separated modes [default: see `llamaberry modes`].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
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
    check_usage(params, question, wanted, chosen, own=True)

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


def clip(text: str, lines: int = 8, chars: int = 600) -> str:
    """A long answer cut to fit a table cell; --json and the history keep it whole."""
    kept = "\n".join(text.strip().splitlines()[:lines])[:chars]
    return kept if kept == text.strip() else kept.rstrip() + " …"
