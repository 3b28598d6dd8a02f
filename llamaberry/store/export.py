"""Runs read back for people: one run as Markdown, many as JSONL or one Markdown document."""

from __future__ import annotations

import json
from collections.abc import Iterator

from llamaberry.core.errors import format_duration
from llamaberry.core.prices import run_cost_text, with_list_price
from llamaberry.core.redact import redact, redact_data
from llamaberry.core.results import Run


def run_markdown(run: Run) -> str:
    """A run as a Markdown document: question, answer, every turn or step, and what it cost."""
    lines = [
        f"# {run.mode} run {run.id}",
        "",
        f"- **Model:** {run.model} ({run.provider})"
        + (
            f", served as {run.served_model}"
            if run.served_model and run.served_model != run.model
            else ""
        ),
        f"- **Started:** {run.started_at.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- **Status:** {run.status}" + (f": {_error(run)}" if run.error else ""),
        f"- **Cost:** {format_duration(run.seconds)}, {run.usage.total_tokens:,} tokens "
        f"({run.usage.prompt_tokens:,} in, {run.usage.cached_tokens:,} cached, "
        f"{run.usage.completion_tokens:,} out), {run_cost_text(run)}",
    ]
    settings = {k: v for k, v in run.settings.items() if v is not None and k != "model"}
    if run.prompt_version:  # runs saved before it was recorded have none
        settings["prompts"] = run.prompt_version
    if settings:
        lines.append("- **Settings:** " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += ["", "## Question", "", run.question, ""]
    heading = "## Partial answer (the run did not finish)" if run.partial else "## Answer"
    lines += [heading, "", run.answer if run.answer is not None else "_(no answer)_", ""]
    for result in run.result.sections():
        lines += [_section(result.heading(), result.usage.total_tokens, result.seconds), ""]
        lines += [_demote(result.content), ""]
        if result.remark():  # a reflection on what came before it, set apart as a quote
            lines += ["\n".join(f"> {line}" for line in result.remark().splitlines()), ""]
    return "\n".join(lines).rstrip() + "\n"


def _error(run: Run) -> str:
    # Runs saved before the status was left out of an interrupted run's error still have it.
    error = run.error or ""
    return error.removeprefix(f"{run.status}: ")


def _section(title: str, tokens: int, seconds: float) -> str:
    return f"## {title}  \n_{seconds:.1f}s · {tokens:,} tokens_"


def _demote(text: str) -> str:
    # The model's own headings sit under ours: push them down two levels so they cannot collide.
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def export_jsonl(runs: Iterator[Run]) -> Iterator[str]:
    """One line of JSON per run, the call log included (and `list_price` said for a Batch API
    run saved before it was recorded)."""
    for run in runs:
        data = with_list_price(run).model_dump(mode="json")
        yield json.dumps(redact_data(data), ensure_ascii=False) + "\n"


def export_markdown(runs: Iterator[Run]) -> Iterator[str]:
    """The runs as one Markdown document, separated by rules."""
    for i, run in enumerate(runs):
        yield ("\n---\n\n" if i else "") + redact(run_markdown(run))
