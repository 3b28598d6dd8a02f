"""`llamaberry ask`: one question through one mode, its thinking streamed to the terminal."""

from __future__ import annotations

from typing import Any

import click

from llamaberry.cli.options import (
    LazyCommand,
    mode_choice,
    mode_options,
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


@click.command(
    cls=LazyCommand,
    modes=mode_options(
        mode_choice(with_default=True, help="How the model thinks (see `llamaberry modes`).")
    ),
    endpoint=True,
)
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of prose.")
@handle_errors
def ask(question: str, mode: str, as_json: bool, **params: Any) -> None:
    """Ask QUESTION (or - to read it from stdin) and show the thinking as it streams."""
    from llamaberry.cli.render import TerminalView

    question = read_question(question)
    chosen = take_options(params)
    check_usage(params, question, [mode], chosen)

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
