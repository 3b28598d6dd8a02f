"""How a command runs and ends: its engine, its event loop (woken by Ctrl-C whichever thread
takes it), one line per error with its exit code, and warnings on stderr.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from llamaberry.cli.options import endpoint_settings
from llamaberry.core.errors import InputError, LlamaberryError

if TYPE_CHECKING:
    from llamaberry.engine import Engine

T = TypeVar("T")


def make_engine(params: dict[str, Any], **extra: Any) -> Engine:
    """Build an engine from the endpoint flags a command received."""
    from llamaberry.core.providers import PROVIDERS
    from llamaberry.engine import Engine  # pydantic and friends load only when a command runs

    engine = Engine(settings=endpoint_settings(params), **extra)
    note = PROVIDERS[engine.settings.provider].without_base_url
    if note and engine.settings.base_url is None:
        click.echo(f"note: {note}", err=True)
    if engine.settings.embedded:
        # The model itself starts on the first call, not here (the engine is instant).
        click.echo(embedded_notice(engine.model) + ".", err=True)
    return engine


def check_usage(
    params: dict[str, Any],
    question: str,
    modes: list[str],
    options: dict[str, Any],
    *,
    own: bool = False,
) -> None:
    """Refuse bad input (settings, the question, each mode's options) before an engine or a
    model starts: a usage error is one line, at once. With `own` (compare), each mode takes
    the options that are its own and ignores the others."""
    from llamaberry import modes as registry
    from llamaberry.run.runner import check_question

    settings = endpoint_settings(params)
    check_question(question, settings.max_question_chars)
    registry.check_defaults(options)
    for mode in modes:
        registry.options_for(mode, registry.own_options(mode, options) if own else options)


def embedded_notice(model: str) -> str:
    """The one line that says the embedded model runs, and how to use the default provider
    (Groq) instead."""
    from llamaberry.core.providers import DEFAULT

    return (
        f"note: no {DEFAULT.key_variable}, so this runs on the embedded {model}, a tiny local "
        f"demo model, not a reasoner; set {DEFAULT.key_variable} to use {DEFAULT.title}"
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
