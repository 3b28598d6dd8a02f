"""`llamaberry ui`: the web UI (the `llamaberry_ui` package, with the `ui` extra's gradio)."""

from __future__ import annotations

from typing import Any

import click

from llamaberry.cli.options import (
    LazyCommand,
    endpoint_settings,
    is_loopback,
    mode_options,
    take_options,
)
from llamaberry.cli.running import embedded_notice, handle_errors
from llamaberry.core.errors import InputError, LlamaberryError


@click.command(cls=LazyCommand, modes=mode_options(), endpoint=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=7860, show_default=True, help="Port to listen on.")
@click.option("--share", is_flag=True, help="Also publish a public gradio.live link.")
@click.option("--auth", metavar="USER:PASSWORD", help="Require this login to open the page.")
@handle_errors
def ui(host: str, port: int, share: bool, auth: str | None, **params: Any) -> None:
    """Start the web UI (a tab per mode, and compare) on http://HOST:PORT.

    Mode options given here are the page's defaults."""
    from llamaberry import modes

    # First, so that without the ui extra its one line is all there is to read. gradio is
    # imported here, never by the other commands.
    app = load_ui_module()
    defaults = take_options(params)
    modes.check_defaults(defaults)

    credentials = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise InputError("--auth must be USER:PASSWORD, both non-empty.")
        credentials = (user, password)
    settings = endpoint_settings(params)
    if settings.embedded:
        click.echo(embedded_notice(settings.model) + ".", err=True)
    local = is_loopback(host)
    if share or not local:
        where = "a public gradio.live link" if share else f"every machine that can reach {host}"
        click.echo(
            f"warning: the UI will be open to {where}; anyone who opens it can run questions "
            "on this server's API key"
            + ("." if credentials else ". Add --auth USER:PASSWORD to require a login."),
            err=True,
        )
    try:
        # The History tab lists every saved run, so it is only shown on this machine.
        page = app.build_app(settings, show_history=local and not share, options=defaults)
        app.serve(page, host=host, port=port, share=share, auth=credentials)
    except OSError as error:
        raise LlamaberryError(f"Cannot serve on {host}:{port}: {error}") from None


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
