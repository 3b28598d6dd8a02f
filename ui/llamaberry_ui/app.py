"""The llamaberry web UI: a tab per mode of the registry, compare and history, over the
engine's event streams.

Start it with `uv run llamaberry ui` or `uv run python -m llamaberry_ui` (same options). The page
only renders events (see `views.py`); every run builds its own engine from the settings on the page
and closes it when the run ends, so a key typed in the page lives exactly as long as one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, cast, get_args, get_origin

# Before gradio is imported: it reads this once, at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr
from pydantic.fields import FieldInfo

from llamaberry import modes as registry
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.options import Options, bounds, describe, plain_type
from llamaberry.core.results import Mode
from llamaberry.core.settings import Settings
from llamaberry.engine import Engine
from llamaberry.providers.limits import RateLimiter
from llamaberry.store import Store, history_enabled

from .history import build_history_tab, export_run, phone_css
from .views import RunView, agreement, mode_name, mode_view, page_words, shown

log = logging.getLogger("llamaberry.ui")

EXAMPLES = [
    "How many times does the letter r appear in the word strawberry?",
    "Which is larger, 9.11 or 9.9?",
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. "
    "How much does the ball cost?",
    "Write a four-line poem about patience that does not use the letter e.",
]
# Largest span of whole numbers drawn as a slider; a wider range gets a number box.
SLIDER_SPAN = 100
# The page's endpoint settings take their range and choices from `Settings`, where they are
# declared with the CLI's flags and the environment's variables.
TEMPERATURES = cast("tuple[float, float]", bounds(Settings.model_fields["temperature"]))
EFFORTS = ["default", *get_args(plain_type(Settings.model_fields["reasoning_effort"]))]
# How long Stop waits for a cancelled run to unwind before it draws the stopped view anyway.
STOP_GRACE = 10.0
# How long the page waits for the endpoint's model list before leaving the box as free text.
MODELS_TIMEOUT = 15.0

CSS = """
/* The answer card: the headline answer, the comprehensive one under it, its cost beside. */
.block.lb-card { border: 2px solid var(--color-accent); border-radius: var(--radius-lg);
  background: var(--color-accent-soft); padding: 8px 16px; }
.prose.lb-card { border: none; background: none; padding: 0; }
.lb-card h3 { font-size: 1.35rem; margin: 4px 0 8px; }
.lb-card .md { font-size: 1.05rem; line-height: 1.6; }
.block.lb-error, .prose.lb-error { border: 1px solid var(--error-border-color);
  border-radius: var(--radius-lg); padding: 4px 16px; background: var(--error-background-fill);
  color: var(--error-text-color); }
.prose.lb-error { border: none; padding: 0; }
.lb-summary { color: var(--body-text-color-subdued); font-size: 0.95rem; }
.lb-about p { margin: 0; color: var(--body-text-color-subdued); }
.lb-details { border-left: 3px solid var(--color-accent); padding-left: 12px; }
.lb-details table { width: auto; min-width: 260px; }
.lb-hint { color: var(--body-text-color-subdued); font-size: 0.85rem; margin-top: -4px; }
/* Turn and step sections: full width, readable type, no stray copy icon, a label that does
   not float over what it labels. */
.lb-sections .message-row, .lb-sections .message-row .flex-wrap,
.lb-sections .message-row .flex-wrap > div,
.lb-sections .message.bot { width: 100% !important; max-width: 100% !important;
  box-sizing: border-box; }
.lb-sections .thought-group { width: auto !important; max-width: none !important; }
.lb-sections .message-row { margin-left: 0 !important; margin-right: 0 !important; }
.lb-sections .message-buttons, .lb-sections .message-buttons-right,
.lb-sections .message-buttons-left { display: none !important; }
.lb-sections .thought-group .content, .lb-sections .thought-group .content .md,
.lb-sections .thought-group .content .md * { font-size: 0.97rem !important; line-height: 1.55;
  color: var(--body-text-color) !important; }
.lb-sections .thought-group .title .md { font-size: 1rem !important;
  color: var(--body-text-color) !important; }
.lb-sections label.float { position: static !important; }
/* A fold's title that wraps (a mode's long Options title on a phone) reads from the left, and
   its arrow keeps clear of the text. */
.label-wrap { text-align: left; gap: 8px; }
/* A copy button floats at the answer's top right, so the text flows around it, not under it. */
.lb-copy .prose > .icon-button-wrapper.top-panel { position: relative !important; float: right;
  top: 0 !important; right: 0 !important; margin: 0 0 4px 8px; }
/* Compare: one card per mode and the badge saying whether their answers agree. */
.lb-mode-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  padding: 8px 12px; background: var(--background-fill-primary); }
.lb-badge p { display: inline-block; padding: 2px 12px; border-radius: 999px; font-weight: 600; }
.lb-agree p { background: #dcfce7; color: #166534; }
.lb-differ p { background: #fef3c7; color: #92400e; }
/* On a phone: Run and Stop under the question, full width; nothing wider than the screen. */
@media (max-width: 640px) {
  .lb-ask, .lb-answer-row { flex-direction: column !important; }
  .lb-ask > *, .lb-answer-row > * { width: 100% !important; min-width: 0 !important; }
  .lb-buttons { flex-direction: row !important; }
  .lb-buttons > * { flex: 1 1 0 !important; }
  .lb-sections { height: auto !important; }
  /* Every tab in sight: the bar wraps (see build_app), with tighter tabs so it takes fewer
     rows. */
  #tabs .tab-container button { padding-left: 10px !important; padding-right: 10px !important; }
}
"""

# Enter runs, Shift+Enter is a newline, in every question box (Gradio's own default for a
# multi-line box is the reverse).
JS = """
() => {
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key !== "Enter" || event.isComposing || !box || box.tagName !== "TEXTAREA") return;
    const holder = box.closest(".lb-question");
    if (!holder) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.shiftKey) {
      document.execCommand("insertText", false, "\\n");
      return;
    }
    const run = document.getElementById(holder.id.replace(/-q$/, "-run"));
    if (run && !run.disabled) run.click();
  }, true);
}
"""
HINT = "Enter runs · Shift+Enter starts a new line"
# How often a running tab redraws when nothing streamed, so its elapsed time keeps moving.
TICK = 1.0


def theme() -> gr.themes.Base:
    """The page's theme, with local fonts only so the page never fetches from the internet."""
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )


# -- runs ------------------------------------------------------------------------------------


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
            # A key typed on a page that runs the embedded model asks for Groq: its defaults
            # apply (the model too, unless one was typed) instead of the tiny model's.
            values.update(provider="groq", max_tokens=None, timeout=None, base_url=None)
            if values["model"] == base.model:
                values["model"] = None
    return Settings.load(**values)


# The provider counts its limits per key and model, so every run of every session that uses
# the same key and model paces through one limiter. Keyed by a digest: the key is never kept.
_limiters: dict[str, RateLimiter] = {}


def shared_limiter(settings: Settings) -> RateLimiter:
    """The rate limiter for this key, endpoint and model, shared by every session."""
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    identity = f"{settings.provider}|{settings.base_url}|{settings.model}|{key}"
    digest = hashlib.sha256(identity.encode()).hexdigest()
    if digest not in _limiters:
        _limiters[digest] = RateLimiter(rpm=settings.rpm, tpm=settings.tpm)
    return _limiters[digest]


async def engine_events(
    settings: Settings,
    mode: Mode,
    question: str,
    history: Store | None = None,
    options: dict[str, Any] | None = None,
) -> AsyncIterator[Any]:
    """The events of one run on an engine of its own, closed when the run ends or is stopped.

    `options` are the page's mode options; each mode is given the ones it takes."""
    limiter = shared_limiter(settings)
    fields = registry.get(mode).options.model_fields
    own = {k: v for k, v in (options or {}).items() if k in fields and v is not None}
    async with Engine(settings=settings, history=history or False, limiter=limiter) as engine:
        async for event in engine.stream(mode, question, **own):
            yield event


async def merge(
    streams: dict[str, Callable[[], AsyncIterator[Any]]], tick: float | None = None
) -> AsyncIterator[list[tuple[str, Any]]]:
    """Run several event streams at once; yield what has arrived as batches of (name, event).

    Batching whatever is already waiting keeps the page current without one redraw per token.
    With `tick`, an empty batch comes every `tick` seconds that nothing arrives, so the page
    can move its clock while the model is silent. Closing this generator (Stop) cancels every
    stream, which closes their HTTP responses.
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    ended = object()

    async def pump(name: str, open_stream: Callable[[], AsyncIterator[Any]]) -> None:
        try:
            async for event in open_stream():
                queue.put_nowait((name, event))
        except LlamaberryError as error:
            queue.put_nowait((name, Failure(str(error))))
        except Exception as error:
            # The page gets one line; the traceback goes to the server's log only.
            log.exception("run failed unexpectedly")
            queue.put_nowait((name, Failure(f"Unexpected error ({type(error).__name__}).")))
        finally:
            queue.put_nowait((name, ended))

    tasks = [asyncio.create_task(pump(name, open_)) for name, open_ in streams.items()]
    running = len(tasks)
    try:
        while running:
            try:
                # Not asyncio.wait_for: on Python 3.11 it drops a cancel (Stop) that arrives in
                # the same loop turn as the next event, and the run would stream on.
                async with asyncio.timeout(tick):
                    batch = [await queue.get()]
            except TimeoutError:
                yield []
                continue
            while not queue.empty():
                batch.append(queue.get_nowait())
            running -= sum(1 for _, event in batch if event is ended)
            yield [(name, event) for name, event in batch if event is not ended]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def apply(view: RunView, event: Any) -> None:
    """Fold an event, or a stream's failure, into a view."""
    if isinstance(event, Failure):
        view.fail(event.message)
    else:
        view.apply(event)


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


# -- what each tab shows ---------------------------------------------------------------------


def run_outputs(view: RunView) -> tuple[Any, ...]:
    """Answer, sections, summary, error and the mode's own details of a mode's tab."""
    error, answer, details = view.error_markdown(), view.answer_markdown(), view.details_markdown()
    return (
        gr.update(value=answer, visible=bool(answer)),
        view.messages(),
        view.summary_markdown(),
        gr.update(value=error, visible=bool(error)),
        gr.update(value=details, visible=bool(details)),
    )


def compare_outputs(
    modes: Sequence[Mode],
    views: dict[str, RunView],
    error: str = "",
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Any, ...]:
    """Each compare card's title, answer, stats and reasoning, then the badge and error line."""
    values: list[Any] = []
    for mode in modes:
        view = views.get(mode)
        if view is None:
            values += [gr.skip()] * 4
            continue
        title = f"### {mode_name(mode, (options or {}).get(mode))}"
        failed = ["lb-summary", "lb-error"] if view.state == "failed" else ["lb-summary"]
        stats = gr.update(value=view.stats_markdown(), elem_classes=failed)
        values += [title, view.live_markdown(), stats, view.reasoning_markdown()]
    text, kind = agreement(views.values())
    values.append(
        gr.update(value=text, visible=bool(text), elem_classes=["lb-badge", f"lb-{kind}"])
    )
    values.append(gr.update(value=shown(error), visible=bool(error)))
    return tuple(values)


# -- the app ---------------------------------------------------------------------------------


def build_app(
    defaults: Settings | None = None,
    *,
    history: Store | bool | None = None,
    show_history: bool = True,
    max_runs: int = 64,
    options: dict[str, Any] | None = None,
) -> gr.Blocks:
    """Build the Blocks app; runs use `defaults` (else the environment) under the page's choices.

    Runs are saved to `history` (a store, or True for the default one; None follows
    LLAMABERRY_HISTORY). `show_history=False` leaves out the History tab, which lists every
    saved run to whoever opens the page. `max_runs` bounds the runs in flight across every
    browser session. `options` are the mode options' defaults (else the environment's).
    """
    base = defaults or Settings.load()
    registry.check_defaults(options or {})
    option_defaults = dict(options or {})
    # Every mode of the registry as it is now: a tab each, and a card each in compare.
    compare_modes: tuple[Mode, ...] = tuple(registry.names())

    if base.provider == "local":
        # Runs build engines of their own; holding the server keeps it up between them
        # (it stops at exit) instead of loading the model again for every run.
        from llamaberry.providers.local import acquire

        acquire(base.model)
    if history is None:
        history = history_enabled()
    store = history if isinstance(history, Store) else Store() if history else None

    def settings_for(model, temperature, effort, api_key) -> Settings:
        return run_settings(base, model, temperature, effort, api_key)

    def mode_options(mode: str, values: Sequence[Any]) -> dict[str, Any]:
        """The page's values for `mode`'s options, checked by its options model (the one
        place their ranges live, so a bad value reads as it does from the CLI or the API)."""
        given = dict(zip(registry.get(mode).options.model_fields, values, strict=True))
        given = {name: value for name, value in given.items() if value is not None}
        return registry.options_for(mode, given, option_defaults).model_dump()

    def planned(mode: str, chosen: Mapping[str, Any]) -> int | None:
        counted = mode_view(mode).counted
        value = chosen.get(counted[0]) if counted else None
        return int(value) if isinstance(value, int | float) else None

    def runner(mode: Mode):
        async def run(question, model, temperature, effort, api_key, *rest):
            *values, session = rest
            view = RunView(mode=mode)
            ended = session.begin(mode, view)
            try:
                try:
                    settings = settings_for(model, temperature, effort, api_key)
                    chosen = mode_options(mode, values)
                except LlamaberryError as error:
                    yield run_outputs(view.fail(str(error)))
                    return
                view.planned = planned(mode, chosen)
                view.begin()
                yield run_outputs(view)
                streams = {mode: lambda: engine_events(settings, mode, question, store, chosen)}
                async with contextlib.aclosing(merge(streams, tick=TICK)) as batches:
                    async for batch in batches:
                        for _, event in batch:
                            apply(view, event)
                        yield run_outputs(view)
            finally:
                ended.set()

        run.__doc__ = f"Stream a {mode} run into its tab."
        return named(run, list(registry.get(mode).options.model_fields))

    # Compare takes every mode's options, in this order, from the controls on each mode's tab.
    compare_fields = [
        (m, name) for m in compare_modes for name in registry.get(m).options.model_fields
    ]

    async def compare_chosen(question, modes, model, temperature, effort, api_key, *rest):
        """Run the chosen modes at once and stream each into its card."""
        *values, session = rest
        chosen = [m for m in compare_modes if m in (modes or [])]
        views = {mode: RunView(mode=mode) for mode in chosen}
        compare = RunView()  # stands for the whole comparison when Stop is pressed
        ended = session.begin("compare", compare)
        session.views.update({f"compare:{m}": v for m, v in views.items()})
        for stale in compare_modes:
            if stale not in chosen:
                session.views.pop(f"compare:{stale}", None)
        try:
            if not chosen:
                yield compare_outputs(
                    compare_modes, views, "**Error:** choose at least one mode to compare."
                )
                return
            try:
                settings = settings_for(model, temperature, effort, api_key)
                given: dict[str, list[Any]] = {mode: [] for mode in compare_modes}
                for (mode, _), value in zip(compare_fields, values, strict=True):
                    given[mode].append(value)
                options_of = {mode: mode_options(mode, given[mode]) for mode in chosen}
            except LlamaberryError as error:
                yield compare_outputs(compare_modes, views, f"**Error:** {page_words(str(error))}")
                return
            session.compare_options = options_of
            for mode, view in views.items():
                view.planned = planned(mode, options_of[mode])
                view.begin()
            yield compare_outputs(compare_modes, views, options=options_of)
            streams = {
                mode: (
                    lambda mode=mode: engine_events(
                        settings, mode, question, store, options_of[mode]
                    )
                )
                for mode in chosen
            }
            async with contextlib.aclosing(merge(streams, tick=TICK)) as batches:
                async for batch in batches:
                    for mode, event in batch:
                        apply(views[mode], event)
                    yield compare_outputs(compare_modes, views, options=options_of)
        finally:
            ended.set()

    run_compare = named(compare_chosen, [f"{mode}_{name}" for mode, name in compare_fields])

    def stopper(mode: Mode):
        async def stop(session):
            view = await session.settled(mode)
            if view is None:
                return tuple(gr.skip() for _ in range(5))
            return run_outputs(view.stop())

        stop.__doc__ = f"Show the stopped {mode} run: what finished stays, the rest is marked."
        return stop

    async def stop_compare(session):
        """Show the stopped comparison, card by card: what finished stays."""
        await session.settled("compare")
        views = {
            mode: session.views[f"compare:{mode}"].stop()
            for mode in compare_modes
            if f"compare:{mode}" in session.views
        }
        return compare_outputs(compare_modes, views, options=session.compare_options)

    def downloads(tab: str):
        def files(session):
            view = session.views.get(tab)
            run = view.run if view is not None else None
            if run is None:
                return gr.update(visible=False), gr.update(visible=False)
            markdown, json_file = export_run(run)
            return (
                gr.update(value=str(markdown), visible=True),
                gr.update(value=str(json_file), visible=True),
            )

        files.__doc__ = f"Offer the {tab} tab's finished run as Markdown and JSON files."
        return files

    async def load_models(api_key, current):
        """Fill the model list from the endpoint; leave it as free text when that fails."""
        current = (current or "").strip() or base.model
        try:
            settings = run_settings(base, current, None, None, api_key)
            async with Engine(settings=settings, history=False) as engine:
                names = await asyncio.wait_for(engine.models(), MODELS_TIMEOUT)
        except Exception as error:
            if isinstance(error, LlamaberryError):
                reason = str(error)
            elif isinstance(error, TimeoutError):
                reason = "no answer in time"
            else:
                log.exception("listing models failed unexpectedly")
                reason = f"unexpected error ({type(error).__name__})"
            return gr.update(
                choices=[current],
                value=current,
                info=f"Could not list the endpoint's models ({reason}); type a model id.",
            )
        choices = names if current in names else [current, *names]
        return gr.update(choices=choices, value=current, info="Models the endpoint serves.")

    # The default mode's tab comes first (it is what a newcomer should try), then the others
    # in the registry's order.
    order = [registry.DEFAULT_MODE, *(m for m in compare_modes if m != registry.DEFAULT_MODE)]

    with gr.Blocks(title="llamaberry", analytics_enabled=False) as app:
        session = gr.State(Session())
        gr.Markdown(
            "# llamaberry\nA fast model, given several passes at your question. "
            "Watch it think, then compare it with a single answer.",
            elem_id="intro",
        )
        if base.embedded:
            gr.Markdown(
                f"**Running on the embedded {base.model}**, a tiny local demo model, not a "
                "reasoner: no GROQ_API_KEY was set. Paste a Groq key under Settings, or set "
                "GROQ_API_KEY and restart, to use Groq.",
                elem_id="embedded-banner",
            )

        with gr.Accordion("Settings", open=False):
            with gr.Row():
                model = gr.Dropdown(
                    choices=[base.model],
                    value=base.model,
                    label="Model",
                    allow_custom_value=True,
                    filterable=True,
                    scale=3,
                )
                refresh = gr.Button("Reload models", size="sm", scale=1)
            with gr.Row():
                temperature = gr.Slider(
                    *TEMPERATURES,
                    value=1.0 if base.temperature is None else base.temperature,
                    step=0.05,
                    label="Temperature",
                )
                effort = gr.Dropdown(
                    EFFORTS,
                    value=base.reasoning_effort or "default",
                    label="Reasoning effort",
                )
            api_key = gr.Textbox(
                label="API key (optional)",
                type="password",
                placeholder="Your own key, used for this browser session only",
                info="Sent with each run and then forgotten: never logged, stored or shown.",
            )
        settings_inputs = [model, temperature, effort, api_key]

        tabs: dict[str, dict[str, Any]] = {}
        # Tabs that do not fit wrap onto another row instead of hiding behind a "⋯" menu, so a
        # phone shows every mode at once.
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            for mode in order:
                spec = registry.get(mode)
                with gr.Tab(mode_name(mode), id=mode):
                    values = registry.options_for(mode, {}, option_defaults).model_dump()
                    tabs[mode] = _run_tab(mode, spec.description, spec.options, values)
            with gr.Tab("Compare", id="compare"):
                compare = _compare_tab(compare_modes)
            if show_history:
                with gr.Tab("History", id="history") as history_tab:
                    if store is None:
                        gr.Markdown("History is off (LLAMABERRY_HISTORY=0): runs are not saved.")
                    else:
                        past = build_history_tab(store)
                        history_tab.select(
                            past["listed"],
                            past["inputs"],
                            [past["table"], past["empty"]],
                            show_progress="hidden",
                        )

        # The sections show their own spinners; Gradio's overlay would hide what streamed.
        limit = {"concurrency_limit": max_runs, "concurrency_id": "runs", "show_progress": "hidden"}
        quick = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
        for name, tab in tabs.items():
            outputs = [tab["answer"], tab["sections"], tab["summary"], tab["error"], tab["details"]]
            inputs = [tab["question"], *settings_inputs, *tab["options"], session]
            triggers = [tab["run"].click, tab["question"].submit]
            gr.on(triggers, busy, None, [tab["run"], *tab["downloads"]], **quick)
            run_event = gr.on(triggers, runner(name), inputs, outputs, api_name=name, **limit)
            offer = downloads(name)
            run_event.then(idle, None, tab["run"], **quick).then(
                offer, [session], tab["downloads"], **quick
            )
            stop_run(tab["stop"], run_event)
            tab["stop"].click(
                stopper(name), [session], outputs, api_name=f"stop_{name}", concurrency_limit=None
            ).then(idle, None, tab["run"], **quick).then(
                offer, [session], tab["downloads"], **quick
            )
            # The bin on the sections clears the whole run: answer, summary and error too.
            tab["sections"].clear(
                lambda: (
                    gr.update(value="", visible=False),
                    "",
                    gr.update(visible=False),
                    gr.update(visible=False),
                ),
                None,
                [tab["answer"], tab["summary"], tab["error"], tab["details"]],
                **quick,
            )

        compare_out = [*compare["outputs"], compare["badge"], compare["error"]]
        compare_triggers = [compare["run"].click, compare["question"].submit]
        gr.on(compare_triggers, busy_compare, None, compare["run"], **quick)
        compare_options = [
            tabs[mode]["options"][list(registry.get(mode).options.model_fields).index(name)]
            for mode, name in compare_fields
        ]
        compare_run = gr.on(
            compare_triggers,
            run_compare,
            [compare["question"], compare["modes"], *settings_inputs, *compare_options, session],
            compare_out,
            api_name="compare",
            **limit,
        )
        compare_run.then(idle, None, compare["run"], **quick)
        stop_run(compare["stop"], compare_run)
        compare["stop"].click(
            stop_compare, [session], compare_out, api_name="stop_compare", concurrency_limit=None
        ).then(idle, None, compare["run"], **quick)
        compare["modes"].change(
            lambda modes: [gr.update(visible=m in (modes or [])) for m in compare_modes],
            compare["modes"],
            compare["columns"],
            api_visibility="private",
            queue=False,
        )

        models_event = {"api_name": "models", "concurrency_limit": None}
        app.load(load_models, [api_key, model], [model], **models_event)
        refresh.click(load_models, [api_key, model], [model], api_visibility="private")
        api_key.submit(load_models, [api_key, model], [model], api_visibility="private")
    return app


def named(run: Callable[..., Any], options: list[str]) -> Callable[..., Any]:
    """`run` with its option parameters named, so the page's API names them (`turns=3`)
    instead of numbering them; gradio passes them in order either way."""
    signature = inspect.signature(run)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_POSITIONAL]
    extra = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in [*options, "session"]
    ]
    run.__signature__ = signature.replace(parameters=[*fixed, *extra])  # type: ignore[attr-defined]
    return run


def stop_run(button: gr.Button, run_event: Any) -> None:
    """Cancel `run_event` when `button` is clicked.

    Registered before the listener that draws the stopped view, so the cancel is sent first
    and that listener finds the run already unwinding instead of waiting for it.
    """
    button.click(None, None, None, cancels=[run_event], queue=False)


def _ask(name: str, hint: str) -> dict[str, Any]:
    """The question box with Run and Stop beside it (under it on a phone)."""
    with gr.Row(equal_height=True, elem_classes=["lb-ask"]):
        question = gr.Textbox(
            label="Question",
            placeholder=hint,
            lines=2,
            max_lines=12,
            scale=5,
            elem_id=f"{name}-q",
            elem_classes=["lb-question"],
        )
        with gr.Column(scale=1, min_width=120, elem_classes=["lb-buttons"]):
            run = gr.Button("Run", variant="primary", elem_id=f"{name}-run")
            stop = gr.Button("Stop", variant="stop", elem_id=f"{name}-stop")
    gr.Markdown(HINT, elem_classes=["lb-hint"])
    return {"question": question, "run": run, "stop": stop}


def _run_tab(
    name: str, description: str, options: type[Options], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A mode's tab: what the mode does, question, Run/Stop, its options, the answer card,
    the mode's own details, the sections, downloads."""
    gr.Markdown(description, elem_classes=["lb-about"], elem_id=f"{name}-about")
    controls = _ask(name, "Ask anything.")
    option_controls: list[Any] = []
    if options.model_fields:
        names = list(options.model_fields)
        title = options_title(names, [values.get(option) for option in names])
        with gr.Accordion(title, open=False, elem_id=f"{name}-options") as folded, gr.Row():
            option_controls = [
                option_control(name, option, field, values.get(option))
                for option, field in options.model_fields.items()
            ]
        # The folded title says what the next run will use, so it need not be opened to know.
        for control in option_controls:
            control.change(
                lambda *chosen: gr.update(label=options_title(names, chosen)),
                option_controls,
                folded,
                queue=False,
                api_visibility="private",
                show_progress="hidden",
            )
    error = gr.Markdown(visible=False, elem_classes=["lb-error"], elem_id=f"{name}-error")
    card = _answer_card(name)
    details = gr.Markdown(visible=False, elem_classes=["lb-details"], elem_id=f"{name}-details")
    gr.Examples(EXAMPLES, inputs=[controls["question"]], label="Examples")
    sections = _sections(name, mode_view(name).sections)
    with gr.Row():
        markdown = gr.DownloadButton(
            "Download Markdown", visible=False, size="sm", elem_id=f"{name}-download-md"
        )
        json_file = gr.DownloadButton(
            "Download JSON", visible=False, size="sm", elem_id=f"{name}-download-json"
        )
    return {
        **controls,
        **card,
        "options": option_controls,
        "details": details,
        "sections": sections,
        "error": error,
        "downloads": [markdown, json_file],
    }


def unchecked(control: gr.Slider | gr.Number) -> Any:
    """`control` with its value passed on as sent, for the mode's options model to check.

    Gradio's own bounds check would answer an out-of-range value (from the page's API, or
    typed in the box beside a slider) in its own words first; the options model is the one
    place ranges are checked, so the page says what the CLI and the API say. (A subclass
    would do it too, but gradio writes a stub file beside any module that defines one.)
    """

    def preprocess(payload: float | None) -> float | int | None:
        return None if payload is None else gr.Number.round_to_precision(payload, control.precision)

    control.preprocess = preprocess  # type: ignore[method-assign]
    return control


def options_title(names: Sequence[str], values: Sequence[Any]) -> str:
    """The Options fold's title with the values set: 'Options · turns 3'."""
    shown = []
    for option, value in zip(names, values, strict=True):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        shown.append(f"{option.replace('_', ' ')} {'—' if value is None else value}")
    return "Options · " + ", ".join(shown)


def option_control(mode: str, name: str, field: FieldInfo, value: Any) -> Any:
    """The control for one option, drawn from its field: a slider over a small whole-number
    range, a number box for a wide or open one, a checkbox for yes/no, a list for choices."""
    kind = plain_type(field)
    label = name.replace("_", " ").capitalize()
    # The field says which mode it belongs to for the CLI's shared help; on its tab that is known.
    about = (field.description or "").replace(f" ({mode}).", ".")
    info = f"{about} {describe(field).capitalize()}.".strip()
    common: dict[str, Any] = {
        "label": label,
        "info": info,
        "elem_id": f"{mode}-{name}",
        "min_width": 160,
    }
    if kind is bool:
        return gr.Checkbox(value=bool(value), **common)
    if get_origin(kind) is Literal:
        return gr.Dropdown(list(get_args(kind)), value=value, **common)
    if kind in (int, float):
        low, high = bounds(field)
        whole = kind is int
        if low is not None and high is not None and (not whole or high - low <= SLIDER_SPAN):
            step = 1 if whole else (high - low) / 100
            return unchecked(gr.Slider(low, high, value=value, step=step, **common))
        return unchecked(gr.Number(value=value, precision=0 if whole else None, **common))
    return gr.Textbox(value=None if value is None else str(value), **common)


def _answer_card(name: str) -> dict[str, Any]:
    """The answer card: the answer (with a copy button) and, beside it, how it ended and its cost."""
    with gr.Row(equal_height=False, elem_classes=["lb-answer-row"]):
        answer = gr.Markdown(
            visible=False,
            buttons=["copy"],
            elem_classes=["lb-card", "lb-copy"],
            elem_id=f"{name}-answer",
            scale=3,
            min_width=240,
        )
        summary = gr.Markdown(
            elem_classes=["lb-summary"], elem_id=f"{name}-summary", scale=1, min_width=200
        )
    return {"answer": answer, "summary": summary}


def _sections(name: str, label: str) -> gr.Chatbot:
    """The calls of a run (its turns, steps, samples...), one section per call."""
    return gr.Chatbot(
        label=label,
        height=560,
        sanitize_html=True,
        render_markdown=True,
        group_consecutive_messages=False,
        buttons=[],
        feedback_options=None,
        placeholder="Each call appears here as it streams.",
        elem_id=f"{name}-sections",
        elem_classes=["lb-sections"],
    )


def _compare_tab(compare_modes: Sequence[Mode]) -> dict[str, Any]:
    """The compare tab: one card per mode, all run at once, and whether their answers agree."""
    gr.Markdown(
        "The same question through each mode at once, side by side. Each mode runs with the "
        "options set on its own tab.",
        elem_classes=["lb-about"],
    )
    controls = _ask("compare", "Ask anything.")
    # Checked at first: the baseline (the registry lists it first) and the default mode; the
    # others, the costly ones among them, are a tick away.
    checked = [m for m in compare_modes if m in (compare_modes[0], registry.DEFAULT_MODE)]
    modes = gr.CheckboxGroup(
        [(mode_name(m), m) for m in compare_modes],
        value=checked,
        label="Modes",
        elem_id="compare-modes",
    )
    error = gr.Markdown(visible=False, elem_classes=["lb-error"], elem_id="compare-error")
    badge = gr.Markdown(visible=False, elem_classes=["lb-badge"], elem_id="compare-badge")
    columns, outputs = [], []
    with gr.Row(equal_height=False):
        for mode in compare_modes:
            with gr.Column(
                visible=mode in checked,
                min_width=260,
                elem_classes=["lb-mode-card"],
                elem_id=f"compare-{mode}",
            ) as column:
                title = gr.Markdown(f"### {mode_name(mode)}", elem_id=f"compare-{mode}-title")
                answer = gr.Markdown(
                    buttons=["copy"], elem_classes=["lb-copy"], elem_id=f"compare-{mode}-answer"
                )
                stats = gr.Markdown(elem_classes=["lb-summary"], elem_id=f"compare-{mode}-stats")
                with gr.Accordion("Reasoning", open=False, elem_id=f"compare-{mode}-reasoning"):
                    reasoning = gr.Markdown()
            columns.append(column)
            outputs += [title, answer, stats, reasoning]
    gr.Examples(EXAMPLES, inputs=[controls["question"]], label="Examples")
    return {
        **controls,
        "modes": modes,
        "error": error,
        "badge": badge,
        "columns": columns,
        "outputs": outputs,
    }


# -- launching -------------------------------------------------------------------------------


def serve(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    quiet: bool = False,
) -> Any:
    """Launch the app; with `block=False` return at once and leave it serving in a thread."""
    if not quiet and not share:
        # Gradio's own banner suggests editing launch(); ours names the address and the exit.
        print(f"llamaberry web UI on http://{host}:{port} (Ctrl+C to stop)", flush=True)
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        prevent_thread_lock=not block,
        quiet=quiet or not share,
        show_error=False,
        ssr_mode=False,
        # Gradio's run history would keep inputs, the API key among them, in the browser.
        run_history=False,
        footer_links=["api", "gradio"],
        theme=theme(),
        # The History table's phone layout is drawn from the registry, so it is built here.
        css=CSS + phone_css(),
        js=JS,
    )
