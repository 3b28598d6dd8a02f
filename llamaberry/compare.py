"""Compare: one question through several modes at once, side by side.

The modes run concurrently, so the wall time is about the slowest mode's, not the sum. A mode
may report more than one entry for its run (refine's first turn is a structured single-pass
answer in its own right, "refine turn 1", at no extra cost): see `ModeSpec.extra_entries`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from llamaberry import modes as registry
from llamaberry.core.events import Event, RunFinished
from llamaberry.core.results import Mode, Run, Usage


class Runner(Protocol):
    """What compare needs of an engine: a model name and a stream per mode."""

    @property
    def model(self) -> str: ...

    def stream(self, mode: Mode, question: str, **options: Any) -> AsyncIterator[Event]: ...


class Entry(BaseModel):
    """One column of a comparison: a mode's answer and what it cost."""

    label: str
    mode: Mode
    status: str
    answer: str | None
    error: str | None = None
    usage: Usage
    seconds: float
    run_id: str
    derived: bool = False


class Comparison(BaseModel):
    """Several modes' runs on one question, and their entries side by side."""

    question: str
    model: str
    seconds: float
    entries: list[Entry]
    runs: list[Run]

    def entry(self, label: str) -> Entry:
        """The entry with this label ("single", "refine", "refine turn 1", "steps")."""
        for entry in self.entries:
            if entry.label == label:
                return entry
        raise KeyError(label)

    def public_dict(self) -> dict[str, object]:
        """The comparison as `--json` shows it (runs without their raw call logs)."""
        return {
            "question": self.question,
            "model": self.model,
            "seconds": self.seconds,
            "entries": [entry.model_dump(mode="json") for entry in self.entries],
            "runs": [run.public_dict() for run in self.runs],
        }


async def compare(
    engine: Runner,
    question: str,
    modes: Sequence[str] | None = None,
    *,
    on_event: Callable[[Mode, Event], None] | None = None,
    **options: Any,
) -> Comparison:
    """Run `modes` on `question` concurrently; a mode that fails is reported, not raised.

    `options` go to each mode that takes them (`turns` to refine, `samples` to vote...).
    """
    chosen = registry.check(registry.default_names() if modes is None else modes)
    given = {k: v for k, v in options.items() if v is not None}
    registry.check_defaults(given)
    # Streams are created up front so a bad question or option fails before any request.
    streams = {
        mode: engine.stream(mode, question, **registry.own_options(mode, given)) for mode in chosen
    }

    async def finish(mode: Mode) -> Run:
        run: Run | None = None
        async for event in streams[mode]:
            if on_event is not None:
                on_event(mode, event)
            if isinstance(event, RunFinished):
                run = event.run
        assert run is not None, "a mode's stream ended without RunFinished"
        return run

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(finish(mode)) for mode in chosen]
    runs = [task.result() for task in tasks]
    entries: list[Entry] = []
    for run in runs:
        entries.append(_entry(run))
        extra = registry.get(run.mode).extra_entries
        for label, result in extra(run) if extra is not None else []:
            entries.append(_derived(run, label, result))
    return Comparison(
        question=runs[0].question,
        model=engine.model,
        seconds=time.perf_counter() - started,
        entries=entries,
        runs=runs,
    )


def _entry(run: Run) -> Entry:
    return Entry(
        label=run.mode,
        mode=run.mode,
        status=run.status,
        answer=run.answer,
        error=run.error,
        usage=run.usage,
        seconds=run.seconds,
        run_id=run.id,
    )


def _derived(run: Run, label: str, result: Any) -> Entry:
    return Entry(
        label=label,
        mode=run.mode,
        status="ok",
        answer=getattr(result, "answer", None) or result.content,
        usage=result.usage,
        seconds=result.seconds,
        run_id=run.id,
        derived=True,
    )
