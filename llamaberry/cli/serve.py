"""`llamaberry serve`: every mode as a model behind an OpenAI-compatible API."""

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
from llamaberry.cli.running import handle_errors
from llamaberry.core.errors import LlamaberryError


@click.command(cls=LazyCommand, modes=mode_options(), endpoint=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    "serve_key",
    envvar="LLAMABERRY_SERVE_KEY",
    help="Require `Authorization: Bearer KEY` on every request [env LLAMABERRY_SERVE_KEY].",
)
@click.option(
    "--reasoning-format",
    "--reasoning-field",
    "reasoning_field",
    type=click.Choice(["think", "reasoning_content", "reasoning", "both", "none"]),
    default="think",
    show_default=True,
    help="How the intermediate work is sent: inline at the head of content in "
    "<think>...</think> (shown by every client, folded by chat apps), in the reasoning_content "
    "or reasoning field (or both), or not at all. A request may choose its own "
    "(reasoning_format); one that asks for JSON or tools gets reasoning_content instead of think.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A web origin (https://chat.example.com) whose pages may call the API from a browser; "
    "repeat for more. Requests from any other origin are refused.",
)
@click.option(
    "--max-body-size",
    type=click.IntRange(1024),
    default=4 * 1024 * 1024,
    show_default=True,
    help="The largest request body taken, in bytes.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Connections open at once (lowered to fit the process's file limit); more are closed.",
)
@handle_errors
def serve(
    host: str,
    port: int,
    serve_key: str | None,
    reasoning_field: str,
    cors_origins: tuple[str, ...],
    max_body_size: int,
    max_connections: int,
    **params: Any,
) -> None:
    """Serve every mode as a model behind an OpenAI-compatible API on http://HOST:PORT/v1.

    Point any OpenAI client at it and pick a mode as the model name (`refine`, `steps`,
    `single`, ...), or MODE/UPSTREAM_MODEL to choose the upstream model too.
    """
    try:
        from llamaberry import serve as endpoint
    except ImportError as error:  # starlette/uvicorn come with the package; say so if missing
        raise LlamaberryError(f"The server needs starlette and uvicorn: {error}") from None

    defaults = take_options(params)
    settings = endpoint_settings(params)
    # Build the default engine now: a missing key, a bad URL or a bad option fails here, not
    # per request.
    endpoint.Gateway(settings, history=False, options=defaults).engine()
    if not is_loopback(host) and not serve_key:
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
            cors_origins=cors_origins,
            max_body=max_body_size,
            max_connections=max_connections,
        )
    except OSError as error:
        raise LlamaberryError(f"Cannot serve on {host}:{port}: {error}") from None
