"""The `llamaberry` command line: the group and its entry point. Each command lives in the
module named after it (`ask.py`, `compare.py`, `eval.py`, `history.py`, `models.py`,
`modes.py`, `serve.py`, `ui.py`, `batch.py`); what they share is in `options.py` (reading the command line)
and `running.py` (engines, errors, exit codes, signals).

Kept light on purpose: the SDKs are imported when a request is made and gradio only by `ui`,
so `llamaberry --help` answers at once. The modes' flags come from the registry and the
endpoint's from `Settings`, built only when a command that takes them is used.
"""

from __future__ import annotations

import click

from llamaberry.cli.ask import ask
from llamaberry.cli.batch import batch
from llamaberry.cli.compare import clip, compare
from llamaberry.cli.eval import eval_command
from llamaberry.cli.history import history
from llamaberry.cli.models import models
from llamaberry.cli.modes import modes_command
from llamaberry.cli.running import show_warnings, stop_like_ctrl_c
from llamaberry.cli.serve import serve
from llamaberry.cli.ui import ui

__all__ = ["cli", "clip", "main"]

COMMANDS = [ask, modes_command, models, history, compare, eval_command, batch, ui, serve]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, commands=COMMANDS)
@click.version_option(package_name="llamaberry")
def cli() -> None:
    """llamaberry: make a fast model think harder, and measure whether it helped.

    `llamaberry modes` lists the ways it can think, with their options. Set GROQ_API_KEY to
    use Groq; without one, a tiny model embedded in the package runs on this machine.
    --provider openai --base-url reaches any OpenAI-compatible server; --provider local --model
    FILE.gguf serves a GGUF model of your own.
    """
    show_warnings()


def main() -> None:
    """Entry point of the `llamaberry` script."""
    stop_like_ctrl_c()
    cli(prog_name="llamaberry")
