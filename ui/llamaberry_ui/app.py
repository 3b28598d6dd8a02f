"""The llamaberry web UI: a tab per mode of the registry, compare and history, over the
engine's event streams.

Start it with `uv run llamaberry ui` or `uv run python -m llamaberry_ui` (same options). The page
only renders events (see `views.py`); every run builds its own engine from the settings on the page
and closes it when the run ends, so a key typed in the page lives exactly as long as one run.

This module puts the page together; each part is built in its own module: the Settings panel
(`settings_panel.py`), a mode's tab (`mode_tab.py`), compare (`compare_tab.py`), history
(`history.py`), the pieces they share (`controls.py`), what runs share (`runs.py`) and the look
(`style.py`).
"""

from __future__ import annotations

import os
from typing import Any

# Before gradio is imported: it reads this once, at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr

from llamaberry import modes as registry
from llamaberry.core.providers import DEFAULT
from llamaberry.core.results import Mode
from llamaberry.core.settings import Settings
from llamaberry.providers import hold
from llamaberry.store import Store, history_enabled

from .compare_tab import CompareTab, build_compare_tab, wire_compare_tab
from .history import build_history_tab
from .mode_tab import ModeTab, build_mode_tab, wire_mode_tab
from .runs import Page, Session
from .settings_panel import build_settings_panel, wire_settings_panel
from .style import JS, page_css, theme
from .views import mode_name

INTRO = (
    "# llamaberry\nA fast model, given several passes at your question. "
    "Watch it think, then compare it with a single answer."
)


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
    # Runs build engines of their own; a provider that runs in this process (the embedded
    # model's) is held up between them (it stops at exit) instead of loading the model again
    # for every run.
    hold(base.provider, base.model)
    if history is None:
        history = history_enabled()
    store = history if isinstance(history, Store) else Store() if history else None
    page = Page(base, store, dict(options or {}))
    # Every mode of the registry as it is now: a tab each, and a card each in compare.
    compare_modes: tuple[Mode, ...] = tuple(registry.names())

    with gr.Blocks(title="llamaberry", analytics_enabled=False) as app:
        session = gr.State(Session())
        gr.Markdown(INTRO, elem_id="intro")
        if base.embedded:
            gr.Markdown(
                f"**Running on the embedded {base.model}**, a tiny local demo model, not a "
                f"reasoner: no {DEFAULT.key_variable} was set. Paste a {DEFAULT.title} key "
                f"under Settings, or set {DEFAULT.key_variable} and restart, to use "
                f"{DEFAULT.title}.",
                elem_id="embedded-banner",
            )
        panel = build_settings_panel(base)
        tabs, compare = _tabs(page, compare_modes, show_history)

        for tab in tabs.values():
            wire_mode_tab(tab, page, panel.inputs, session, max_runs)
        option_inputs = [control for mode in compare_modes for control in tabs[mode].options]
        wire_compare_tab(
            compare, page, compare_modes, panel.inputs, option_inputs, session, max_runs
        )
        wire_settings_panel(panel, app, base)
    return app


def _tabs(
    page: Page, compare_modes: tuple[Mode, ...], show_history: bool
) -> tuple[dict[Mode, ModeTab], CompareTab]:
    """Lay out the tabs: one per mode (the default mode's first: it is what a newcomer should
    try; then the registry's order), compare, and history when it is shown."""
    order = [registry.DEFAULT_MODE, *(m for m in compare_modes if m != registry.DEFAULT_MODE)]
    tabs: dict[Mode, ModeTab] = {}
    # Tabs that do not fit wrap onto another row instead of hiding behind a "⋯" menu, so a
    # phone shows every mode at once.
    with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
        for mode in order:
            with gr.Tab(mode_name(mode), id=mode):
                tabs[mode] = build_mode_tab(page, mode)
        with gr.Tab("Compare", id="compare"):
            compare = build_compare_tab(compare_modes)
        if show_history:
            with gr.Tab("History", id="history") as history_tab:
                _history(history_tab, page.store)
    return tabs, compare


def _history(history_tab: gr.Tab, store: Store | None) -> None:
    """The History tab's content, its table reloaded whenever the tab is opened."""
    if store is None:
        gr.Markdown("History is off (LLAMABERRY_HISTORY=0): runs are not saved.")
        return
    past = build_history_tab(store)
    history_tab.select(
        past["listed"], past["inputs"], [past["table"], past["empty"]], show_progress="hidden"
    )


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
        css=page_css(),
        js=JS,
    )
