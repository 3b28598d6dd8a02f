"""The compare tab: the same question through the ticked modes at once, one card each, and a
badge saying whether their answers agree. Each mode runs with the options set on its own tab.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from llamaberry import modes as registry
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.results import Mode

from . import controls
from .runs import QUICK, Page, Session, busy_compare, idle, planned, queued, watch
from .views import RunView, agreement, mode_name, page_words, shown


@dataclass
class CompareTab:
    """The components of the compare tab."""

    ask: controls.Ask
    modes: gr.CheckboxGroup
    error: gr.Markdown
    badge: gr.Markdown
    columns: list[gr.Column]
    # Each card's title, answer, stats and reasoning, card after card.
    cards: list[Any]

    @property
    def outputs(self) -> list[Any]:
        """What a comparison redraws, in `compare_outputs`' order."""
        return [*self.cards, self.badge, self.error]


def build_compare_tab(compare_modes: Sequence[Mode]) -> CompareTab:
    """Lay out the compare tab in the current gradio context: a card per mode, the checked
    ones shown."""
    gr.Markdown(
        "The same question through each mode at once, side by side. Each mode runs with the "
        "options set on its own tab.",
        elem_classes=["lb-about"],
    )
    ask = controls.ask("compare", "Ask anything.")
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
    columns, cards = [], []
    with gr.Row(equal_height=False):
        for mode in compare_modes:
            column, card = _card(mode, visible=mode in checked)
            columns.append(column)
            cards += card
    controls.examples(ask.question)
    return CompareTab(ask, modes, error, badge, columns, cards)


def _card(mode: Mode, visible: bool) -> tuple[gr.Column, list[Any]]:
    """One mode's card: its title, answer, stats, and its reasoning one click away."""
    with gr.Column(
        visible=visible,
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
    return column, [title, answer, stats, reasoning]


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


def wire_compare_tab(
    tab: CompareTab,
    page: Page,
    compare_modes: Sequence[Mode],
    settings_inputs: Sequence[Any],
    option_inputs: Sequence[Any],
    session: gr.State,
    max_runs: int,
) -> None:
    """Run the ticked modes on Run or Enter (the `compare` API endpoint), Stop, and show the
    cards of the ticked modes only.

    `option_inputs` are every mode's option controls, those on each mode's tab, in
    `compare_modes`' order.
    """
    limit, quick = queued(max_runs), QUICK
    gr.on(tab.ask.triggers, busy_compare, None, tab.ask.run, **quick)
    compare_run = gr.on(
        tab.ask.triggers,
        comparer(page, compare_modes),
        [tab.ask.question, tab.modes, *settings_inputs, *option_inputs, session],
        tab.outputs,
        api_name="compare",
        **limit,
    )
    compare_run.then(idle, None, tab.ask.run, **quick)
    controls.stop_run(tab.ask.stop, compare_run)
    tab.ask.stop.click(
        stopper(compare_modes),
        [session],
        tab.outputs,
        api_name="stop_compare",
        concurrency_limit=None,
    ).then(idle, None, tab.ask.run, **quick)
    tab.modes.change(
        lambda modes: [gr.update(visible=m in (modes or [])) for m in compare_modes],
        tab.modes,
        tab.columns,
        api_visibility="private",
        queue=False,
    )


def comparer(page: Page, compare_modes: Sequence[Mode]) -> Callable[..., Any]:
    """The listener that runs the ticked modes at once and streams each into its card."""
    # Compare takes every mode's options, in this order, from the controls on each mode's tab.
    fields = [(m, name) for m in compare_modes for name in registry.get(m).options.model_fields]

    async def compare_chosen(question, modes, model, temperature, effort, api_key, *rest):
        """Run the chosen modes at once and stream each into its card."""
        *values, session = rest
        chosen = [m for m in compare_modes if m in (modes or [])]
        views = {mode: RunView(mode=mode) for mode in chosen}
        ended = _begin(session, compare_modes, views)
        try:
            if not chosen:
                yield compare_outputs(
                    compare_modes, views, "**Error:** choose at least one mode to compare."
                )
                return
            try:
                settings = page.settings(model, temperature, effort, api_key)
                given: dict[str, list[Any]] = {mode: [] for mode in compare_modes}
                for (mode, _), value in zip(fields, values, strict=True):
                    given[mode].append(value)
                options_of = {mode: page.options(mode, given[mode]) for mode in chosen}
            except LlamaberryError as error:
                yield compare_outputs(compare_modes, views, f"**Error:** {page_words(str(error))}")
                return
            session.compare_options = options_of
            for mode, view in views.items():
                view.planned = planned(mode, options_of[mode])
                view.begin()
            yield compare_outputs(compare_modes, views, options=options_of)
            streams = {m: page.events(settings, m, question, options_of[m]) for m in chosen}
            async with contextlib.aclosing(watch(views, streams)) as redraws:
                async for _ in redraws:
                    yield compare_outputs(compare_modes, views, options=options_of)
        finally:
            ended.set()

    return controls.named(compare_chosen, [f"{mode}_{name}" for mode, name in fields])


def _begin(
    session: Session, compare_modes: Sequence[Mode], views: dict[str, RunView]
) -> asyncio.Event:
    """Record a comparison of `views` in the session (its cards for Stop, none left from an
    earlier one); return the event to set when it ends."""
    ended = session.begin("compare", RunView())  # stands for the whole comparison
    session.views.update({f"compare:{m}": v for m, v in views.items()})
    for stale in compare_modes:
        if stale not in views:
            session.views.pop(f"compare:{stale}", None)
    return ended


def stopper(compare_modes: Sequence[Mode]) -> Callable[..., Any]:
    """The listener that draws the stopped comparison, card by card: what finished stays."""

    async def stop_compare(session: Session) -> tuple[Any, ...]:
        """Show the stopped comparison, card by card: what finished stays."""
        await session.settled("compare")
        views = {
            mode: session.views[f"compare:{mode}"].stop()
            for mode in compare_modes
            if f"compare:{mode}" in session.views
        }
        return compare_outputs(compare_modes, views, options=session.compare_options)

    return stop_compare
