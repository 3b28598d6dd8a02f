"""The `llamaberry` command line.

Kept light on purpose: the SDKs are imported when a request is made and gradio only by `ui`,
so `llamaberry --help` answers at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import InputError, LlamaberryError

MODES = ("refine", "single", "steps")


def endpoint_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and tune the model endpoint, shared by every command."""
    options = [
        click.option(
            "--model", "-m", help="Model id [env LLAMABERRY_MODEL; default openai/gpt-oss-120b]."
        ),
        click.option(
            "--provider",
            type=click.Choice(["groq", "openai"]),
            help="groq (default) or openai for any OpenAI-compatible server [env LLAMABERRY_PROVIDER].",
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
        click.option("--timeout", type=float, help="Seconds to wait for a call [default 120]."),
        click.option("--rpm", type=int, help="Requests-per-minute limit shared by all runs."),
        click.option("--tpm", type=int, help="Tokens-per-minute budget shared by all runs."),
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
    "rpm",
    "tpm",
)


def make_engine(options: dict[str, Any], **extra: Any):
    """Build an engine from the endpoint options a command received."""
    from .engine import Engine  # pydantic and friends load only when a command runs

    return Engine(**{k: options.get(k) for k in ENDPOINT_KEYS}, **extra)


def fail(error: BaseException, code: int = 1) -> None:
    """Print one line for the user on stderr and exit; never a traceback."""
    click.echo(f"error: {error}", err=True)
    sys.exit(code)


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

    Modes: refine (reasoning turns, each critiquing the last, then a synthesis), steps
    (validated JSON reasoning steps, then a plain answer) and single (the question asked once,
    the baseline). Set GROQ_API_KEY, or use --provider openai --base-url for a local server.
    """


@cli.command()
@click.argument("question")
@click.option("--mode", type=click.Choice(MODES), default="refine", show_default=True)
@click.option("--turns", "-n", type=int, help="Reasoning turns for refine, 1 to 10 [default 3].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of prose.")
@endpoint_options
@handle_errors
def ask(question: str, mode: str, turns: int | None, as_json: bool, **options: Any) -> None:
    """Ask QUESTION (or - to read it from stdin) and show the thinking as it streams."""
    from .render import TerminalView

    question = read_question(question)
    if turns is not None and not 1 <= turns <= 10:
        raise InputError(f"--turns must be from 1 to 10 (got {turns}).")

    async def go():
        async with make_engine(options, turns=turns) as engine:
            view = TerminalView(quiet=as_json)
            async for event in engine.stream(mode, question):
                view.show(event)
            return view.run

    run = asyncio.run(go())
    if as_json:
        click.echo(json.dumps(run.public_dict(), ensure_ascii=False))
    if run.status != "ok":
        fail(run.error or "the run failed", 1)


@cli.command()
@endpoint_options
@handle_errors
def models(**options: Any) -> None:
    """List the models the endpoint serves (the configured one is starred)."""

    async def go() -> tuple[str, list[str]]:
        async with make_engine(options) as engine:
            return engine.model, await engine.models()

    current, names = asyncio.run(go())
    for name in names:
        click.echo(f"{'*' if name == current else ' '} {name}")
    if current not in names:
        click.echo(f"note: the configured model '{current}' is not in this list.", err=True)


def main() -> None:
    """Entry point of the `llamaberry` script."""
    cli(prog_name="llamaberry")
