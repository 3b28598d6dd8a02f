"""`llamaberry models`: the models the endpoint serves."""

from __future__ import annotations

from typing import Any

import click

from llamaberry.cli.options import LazyCommand
from llamaberry.cli.running import handle_errors, make_engine, run_async


@click.command(cls=LazyCommand, endpoint=True)
@handle_errors
def models(**params: Any) -> None:
    """List the models the endpoint serves (the configured one is starred)."""

    async def go() -> tuple[str, list[str]]:
        async with make_engine(params) as engine:
            return engine.model, await engine.models()

    current, names = run_async(go())
    for name in names:
        click.echo(f"{'*' if name == current else ' '} {name}")
    if current not in names:
        click.echo(f"note: the configured model '{current}' is not in this list.", err=True)
