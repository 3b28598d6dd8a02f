"""`llamaberry batch`: an eval's rounds of calls through a batch runner of your own (vLLM's
`run-batch`), where no hosted Batch API is: `export` writes a round's requests, `import` takes
its outputs back, and `export` again writes the next round, until the eval's report is written.
(`llamaberry eval --batch` does the same through Groq's or OpenAI's Batch API, by itself.)
"""

from __future__ import annotations

from pathlib import Path

import click

from llamaberry.cli.running import handle_errors
from llamaberry.core.errors import InputError


@click.group("batch")
def batch() -> None:
    """Run an eval round by round through your own batch runner (vLLM's run-batch).

    \b
    1. llamaberry batch export DATA --modes single,refine --provider openai \\
         --base-url http://HOST:8000/v1 --model MODEL -o round.jsonl
    2. vllm run-batch -i round.jsonl -o out.jsonl --model MODEL
    3. llamaberry batch import out.jsonl
    Repeat 1 to 3 (one round per pass) until step 1 writes the eval's report.
    """


@batch.command(
    "export",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), required=True)
@click.pass_context
def export(ctx: click.Context, output: str) -> None:
    """Write the next round's requests to -o FILE (takes every `llamaberry eval` option)."""
    from llamaberry.cli.eval import eval_command

    ctx.invoke(eval_command, **_eval_params(ctx, [*ctx.args, "--batch-export", output]))


def _eval_params(ctx: click.Context, args: list[str]) -> dict[str, object]:
    """The eval command's parameters, parsed from `args` as `llamaberry eval` would."""
    from llamaberry.cli.eval import eval_command

    sub = eval_command.make_context("export", args, parent=ctx)
    return dict(sub.params)


@batch.command("import")
@click.argument("outputs", type=click.Path(exists=True, dir_okay=False))
@handle_errors
def import_command(outputs: str) -> None:
    """Take a batch runner's OUTPUTS file back: the next `batch export` goes on from there."""
    from llamaberry.eval.batch import EXPORTED, import_outputs
    from llamaberry.store.batches import BatchLedger

    try:
        content = Path(outputs).read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read {outputs}: {error.strerror or error}.") from None
    ledger = BatchLedger(EXPORTED)
    try:
        taken, unknown = import_outputs(ledger, content)
    except ValueError as error:
        raise InputError(f"{outputs} is not a batch output file (JSON lines): {error}") from None
    finally:
        ledger.close()
    click.echo(f"took {taken} answers from {outputs}", err=True)
    if unknown:
        click.echo(
            f"warning: {unknown} lines matched no exported request (another eval's, or edited)",
            err=True,
        )
