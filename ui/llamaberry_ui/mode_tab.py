"""A mode's tab: what the mode does, the question, its options, the answer card, the mode's own
details, a section per call, downloads; and the listeners that run, stop and export it.

Every mode of the registry gets one, drawn from its `ModeSpec` and its view in `views.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from llamaberry import modes as registry
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.results import Mode

from . import controls
from .history import export_run
from .runs import QUICK, Page, Session, busy, idle, planned, queued, watch
from .views import RunView, mode_view


@dataclass
class ModeTab:
    """The components of one mode's tab."""

    mode: Mode
    ask: controls.Ask
    options: list[Any]
    error: gr.Markdown
    answer: gr.Markdown
    summary: gr.Markdown
    details: gr.Markdown
    sections: gr.Chatbot
    downloads: list[gr.DownloadButton]

    @property
    def outputs(self) -> list[Any]:
        """What a run redraws, in `run_outputs`' order."""
        return [self.answer, self.sections, self.summary, self.error, self.details]


def build_mode_tab(page: Page, mode: Mode) -> ModeTab:
    """Lay out `mode`'s tab in the current gradio context; its options start at the page's
    defaults."""
    spec = registry.get(mode)
    gr.Markdown(spec.description, elem_classes=["lb-about"], elem_id=f"{mode}-about")
    ask = controls.ask(mode, "Ask anything.")
    # By the question they fill in, never between an answer and the reasoning behind it.
    controls.examples(ask.question)
    options = controls.options_fold(mode, spec.options, page.defaults(mode))
    error = gr.Markdown(visible=False, elem_classes=["lb-error"], elem_id=f"{mode}-error")
    answer, summary = controls.answer_card(mode)
    details = controls.details(mode)
    placeholder = "Each call appears here as it streams."
    sections = controls.sections(mode, mode_view(mode).sections, placeholder)
    downloads = controls.downloads(mode)
    return ModeTab(mode, ask, options, error, answer, summary, details, sections, downloads)


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


def wire_mode_tab(
    tab: ModeTab, page: Page, settings_inputs: Sequence[Any], session: gr.State, max_runs: int
) -> None:
    """Run on Run or Enter (one API endpoint per mode), Stop, offer the finished run's files,
    and let the bin on the sections clear the whole run."""
    name = tab.mode
    limit, quick = queued(max_runs), QUICK
    inputs = [tab.ask.question, *settings_inputs, *tab.options, session]
    gr.on(tab.ask.triggers, busy, None, [tab.ask.run, *tab.downloads], **quick)
    run_event = gr.on(
        tab.ask.triggers, runner(page, name), inputs, tab.outputs, api_name=name, **limit
    )
    offer = downloads(name)
    run_event.then(idle, None, tab.ask.run, **quick).then(offer, [session], tab.downloads, **quick)
    controls.stop_run(tab.ask.stop, run_event)
    tab.ask.stop.click(
        stopper(name), [session], tab.outputs, api_name=f"stop_{name}", concurrency_limit=None
    ).then(idle, None, tab.ask.run, **quick).then(offer, [session], tab.downloads, **quick)
    # The bin on the sections clears the whole run: answer, summary and error too.
    tab.sections.clear(
        lambda: (
            gr.update(value="", visible=False),
            "",
            gr.update(visible=False),
            gr.update(visible=False),
        ),
        None,
        [tab.answer, tab.summary, tab.error, tab.details],
        **quick,
    )


def runner(page: Page, mode: Mode) -> Callable[..., Any]:
    """The listener that streams a run of `mode` into its tab."""

    async def run(question, model, temperature, effort, api_key, *rest):
        *values, session = rest
        view = RunView(mode=mode)
        ended = session.begin(mode, view)
        try:
            try:
                settings = page.settings(model, temperature, effort, api_key)
                chosen = page.options(mode, values)
            except LlamaberryError as error:
                yield run_outputs(view.fail(str(error)))
                return
            view.planned = planned(mode, chosen)
            view.begin()
            yield run_outputs(view)
            streams = {mode: page.events(settings, mode, question, chosen)}
            async with contextlib.aclosing(watch({mode: view}, streams)) as redraws:
                async for _ in redraws:
                    yield run_outputs(view)
        finally:
            ended.set()

    run.__doc__ = f"Stream a {mode} run into its tab."
    return controls.named(run, list(registry.get(mode).options.model_fields))


def stopper(mode: Mode) -> Callable[..., Any]:
    """The listener that draws `mode`'s stopped run: what finished stays, the rest is marked."""

    async def stop(session: Session) -> tuple[Any, ...]:
        view = await session.settled(mode)
        if view is None:
            return tuple(gr.skip() for _ in range(5))
        return run_outputs(view.stop())

    stop.__doc__ = f"Show the stopped {mode} run: what finished stays, the rest is marked."
    return stop


def downloads(tab: str) -> Callable[..., Any]:
    """The listener that offers `tab`'s finished run as Markdown and JSON files."""

    def files(session: Session) -> tuple[Any, Any]:
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
