"""Compare: one question through several modes at once, side by side.

The modes run concurrently, so the wall time is about the slowest mode's, not the sum. The
refine run's first turn is a structured single-pass answer in its own right; it is reported as
an extra entry, "refine turn 1", at no extra cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, get_args

from pydantic import BaseModel

from .errors import InputError
from .events import Event, RunFinished
from .results import Mode, Run, Usage

if TYPE_CHECKING:
    from .engine import Engine


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


def check_modes(modes: Sequence[str]) -> list[Mode]:
    """The modes asked for, without repeats; `InputError` for an unknown one."""
    available = get_args(Mode)
    chosen: list[Mode] = []
    for mode in modes:
        if mode not in available:
            raise InputError(f"Unknown mode '{mode}'; choose from: {', '.join(available)}.")
        if mode not in chosen:
            chosen.append(mode)  # type: ignore[arg-type]
    if not chosen:
        raise InputError("Give at least one mode to compare.")
    return chosen


async def compare(
    engine: Engine,
    question: str,
    modes: Sequence[str] = ("single", "refine", "steps"),
    *,
    on_event: Callable[[Mode, Event], None] | None = None,
) -> Comparison:
    """Run `modes` on `question` concurrently; a mode that fails is reported, not raised."""
    chosen = check_modes(modes)
    # Streams are created up front so a bad question fails before any request is sent.
    streams = {mode: engine.stream(mode, question) for mode in chosen}

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
        if run.mode == "refine" and run.turns:
            entries.append(_first_turn(run))
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


def _first_turn(run: Run) -> Entry:
    first = run.turns[0]
    return Entry(
        label="refine turn 1",
        mode="refine",
        status="ok",
        answer=first.answer,
        usage=first.usage,
        seconds=first.seconds,
        run_id=run.id,
        derived=True,
    )
