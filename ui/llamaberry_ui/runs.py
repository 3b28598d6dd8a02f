"""What every tab's runs share: the page's defaults, a browser session's runs, one run's
engine and its events, and the Run button's states.

Nothing here lays anything out; the tabs (`mode_tab.py`, `compare_tab.py`) do, and stream
their runs through `watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from llamaberry import modes as registry
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.providers import DEFAULT
from llamaberry.core.results import Mode
from llamaberry.core.settings import Settings
from llamaberry.engine import Engine
from llamaberry.providers.limits import LimiterPool
from llamaberry.run.merge import merge
from llamaberry.store import Store

from .views import RunView, mode_view

log = logging.getLogger("llamaberry.ui")

# How long Stop waits for a cancelled run to unwind before it draws the stopped view anyway.
STOP_GRACE = 10.0
# How often a running tab redraws when nothing streamed, so its elapsed time keeps moving.
TICK = 1.0

# Every run of every session that uses the same key, endpoint and model paces through one
# limiter, since the provider counts its limits that way.
LIMITERS = LimiterPool()


class Session:
    """One browser tab's runs: the latest view of each tab's run and whether it has ended.

    Held in a `gr.State`, so every browser session gets its own and none sees another's.
    """

    def __init__(self) -> None:
        self.views: dict[str, RunView] = {}
        self.ended: dict[str, asyncio.Event] = {}
        # Each mode's options in the latest comparison, for its card's title after Stop.
        self.compare_options: dict[str, dict[str, Any]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Session:
        # gr.State copies its initial value for each new browser session: start empty.
        return Session()

    def begin(self, tab: str, view: RunView) -> asyncio.Event:
        """Record that a run of `tab` started; set the returned event when it ends."""
        self.views[tab] = view
        ended = self.ended[tab] = asyncio.Event()
        return ended

    async def settled(self, tab: str) -> RunView | None:
        """Wait (briefly) for `tab`'s run to unwind, then return its view."""
        ended = self.ended.get(tab)
        if ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), STOP_GRACE)
        return self.views.get(tab)


class Failure:
    """A stream that ended in an exception instead of a `RunFinished`."""

    def __init__(self, message: str) -> None:
        self.message = message


def run_settings(
    base: Settings,
    model: str | None,
    temperature: float | None,
    effort: str | None,
    api_key: str | None,
) -> Settings:
    """The settings for one run: the page's choices over the app's defaults."""
    values: dict[str, Any] = base.model_dump()
    values["model"] = (model or "").strip() or base.model
    values["temperature"] = temperature
    values["reasoning_effort"] = None if effort in (None, "", "default") else effort
    if api_key and api_key.strip():
        values["api_key"] = api_key.strip()
        if base.embedded:
            # A key typed on a page that runs the embedded model asks for the default provider
            # (Groq), as a key found in the environment would: its defaults apply (the model
            # too, unless one was typed) instead of the tiny model's.
            values.update(provider=DEFAULT.name, max_tokens=None, timeout=None, base_url=None)
            if values["model"] == base.model:
                values["model"] = None
    return Settings.load(**values)


@dataclass
class Page:
    """What the page's runs start from: the app's settings, where runs are saved, and the
    mode options' defaults."""

    base: Settings
    store: Store | None
    option_defaults: dict[str, Any] = field(default_factory=dict)

    def settings(self, model: Any, temperature: Any, effort: Any, api_key: Any) -> Settings:
        """The settings for one run, from the Settings panel's values."""
        return run_settings(self.base, model, temperature, effort, api_key)

    def defaults(self, mode: str) -> dict[str, Any]:
        """`mode`'s options before the page changes any: what its tab's controls start at."""
        return registry.options_for(mode, {}, self.option_defaults).model_dump()

    def options(self, mode: str, values: Sequence[Any]) -> dict[str, Any]:
        """The page's values for `mode`'s options, checked by its options model (the one
        place their ranges live, so a bad value reads as it does from the CLI or the API)."""
        given = dict(zip(registry.get(mode).options.model_fields, values, strict=True))
        given = {name: value for name, value in given.items() if value is not None}
        return registry.options_for(mode, given, self.option_defaults).model_dump()

    def events(
        self, settings: Settings, mode: Mode, question: str, options: dict[str, Any]
    ) -> AsyncIterator[Any]:
        """One run's events, saved to the page's store."""
        return engine_events(settings, mode, question, self.store, options)


def planned(mode: str, chosen: Mapping[str, Any]) -> int | None:
    """How many of the mode's counted calls (turns, samples) the chosen options ask for."""
    counted = mode_view(mode).counted
    value = chosen.get(counted[0]) if counted else None
    return int(value) if isinstance(value, int | float) else None


async def engine_events(
    settings: Settings,
    mode: Mode,
    question: str,
    history: Store | None = None,
    options: dict[str, Any] | None = None,
) -> AsyncIterator[Any]:
    """The events of one run on an engine of its own, closed when the run ends or is stopped.

    `options` are the page's mode options; each mode is given the ones it takes."""
    limiter = LIMITERS.get(settings)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    own = registry.own_options(mode, given)
    async with Engine(settings=settings, history=history or False, limiter=limiter) as engine:
        async for event in engine.stream(mode, question, **own):
            yield event


async def guarded(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A run's events, ending in a `Failure` instead of an exception, so one mode's error in
    compare leaves the others running and the page shows it as one line."""
    try:
        async for event in events:
            yield event
    except LlamaberryError as error:
        yield Failure(str(error))
    except Exception as error:
        # The page gets one line; the traceback goes to the server's log only.
        log.exception("run failed unexpectedly")
        yield Failure(f"Unexpected error ({type(error).__name__}).")


async def watch(
    views: Mapping[str, RunView], streams: Mapping[str, AsyncIterator[Any]]
) -> AsyncGenerator[None, None]:
    """Stream each run into its view (by name); yield after each batch so the tab can redraw.

    Batches of whatever has arrived keep the page current without one redraw per token, and
    an empty one every `TICK` seconds moves its clock while the model is silent. Closing this
    generator (Stop) cancels every run, which closes their HTTP responses: read it inside
    `contextlib.aclosing`.
    """
    guarded_streams = {name: guarded(stream) for name, stream in streams.items()}
    async with contextlib.aclosing(merge(guarded_streams, tick=TICK)) as batches:
        async for batch in batches:
            for name, event in batch:
                apply(views[name], event)
            yield None


def apply(view: RunView, event: Any) -> None:
    """Fold an event, or a stream's failure, into a view."""
    if isinstance(event, Failure):
        view.fail(event.message)
    else:
        view.apply(event)


# Listeners that only redraw a button or offer files: not queued, not in the page's API.
QUICK: dict[str, Any] = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}


def queued(max_runs: int) -> dict[str, Any]:
    """How a run's listener is queued: at most `max_runs` runs in flight across every tab
    and session. The sections show their own spinners; Gradio's overlay would hide what
    streamed."""
    return {"concurrency_limit": max_runs, "concurrency_id": "runs", "show_progress": "hidden"}


def busy() -> tuple[Any, ...]:
    """The Run button while a run streams (and no stale downloads)."""
    return (
        gr.update(value="Running…", interactive=False, variant="secondary"),
        gr.update(visible=False),
        gr.update(visible=False),
    )


def busy_compare() -> Any:
    """The compare tab's Run button while its modes stream."""
    return gr.update(value="Running…", interactive=False, variant="secondary")


def idle() -> Any:
    """The Run button, ready again."""
    return gr.update(value="Run", interactive=True, variant="primary")
