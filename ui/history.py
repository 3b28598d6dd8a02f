"""The History tab: browse saved runs and reopen one.

The pure functions (`history_rows`, `show_run`) read the store and return plain data, so they
are tested without a browser; `build_history_tab` lays them out with gradio inside whatever
`gr.Tab` the page mounts it in.
"""

# No `from __future__ import annotations` here: gradio reads `pick`'s `gr.SelectData`
# annotation at run time to know it wants the selection event.
from typing import Any

from llamaberry.errors import LlamaberryError
from llamaberry.redact import redact
from llamaberry.store import Store, run_markdown
from ui.views import shown

HEADERS = ["id", "started (UTC)", "mode", "model", "status", "tokens", "seconds", "question"]
MODES = ["all", "single", "refine", "steps"]
PROMPT = "Pick a run in the table (or paste its id) to reopen it."


def history_rows(
    store: Store, *, mode: str = "all", search: str = "", limit: int = 200
) -> list[list[Any]]:
    """The table's rows, newest first, filtered by mode and by text in question or answer."""
    rows = store.list_runs(
        mode=None if mode in ("", "all", None) else mode,
        search=search.strip() or None,
        limit=limit,
    )
    return [
        [
            row.id,
            row.started_at[:19].replace("T", " "),
            row.mode,
            row.model,
            row.status,
            row.total_tokens,
            round(row.seconds, 1),
            redact(" ".join(row.question.split()))[:120],
        ]
        for row in rows
    ]


def show_run(store: Store, run_id: str) -> str:
    """The run as Markdown, or one line saying why it cannot be shown."""
    if not run_id or not run_id.strip():
        return PROMPT
    try:
        return shown(run_markdown(store.get(run_id)))
    except LlamaberryError as error:
        return f"**{error}**"


def build_history_tab(store: Store | None = None) -> dict[str, Any]:
    """Lay out the History tab in the current gradio context; return its components.

    The returned `refresh` (a function of mode and search) and `inputs`/`table` let the page
    reload the table when the tab is selected: `tab.select(h["refresh"], h["inputs"], h["table"])`.
    """
    import gradio as gr

    history = store or Store()

    def refresh(mode: str, search: str) -> list[list[Any]]:
        try:
            return history_rows(history, mode=mode, search=search)
        except LlamaberryError as error:
            gr.Warning(str(error))
            return []

    def pick(table: list[list[Any]], event: gr.SelectData) -> tuple[str, str]:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        try:
            run_id = str(table[row][0])
        except (IndexError, KeyError, TypeError):
            return "", PROMPT
        return run_id, show_run(history, run_id)

    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="text in a question or answer", scale=3)
        mode = gr.Dropdown(MODES, value="all", label="Mode", scale=1)
        reload = gr.Button("Refresh", scale=0)
    table = gr.Dataframe(
        headers=HEADERS,
        value=lambda: refresh("all", ""),
        type="array",
        interactive=False,
        wrap=True,
    )
    with gr.Row():
        run_id = gr.Textbox(label="Run id", scale=3)
        open_button = gr.Button("Open", scale=0)
    view = gr.Markdown(PROMPT)

    inputs = [mode, search]
    for trigger in (reload.click, search.submit, mode.change):
        trigger(refresh, inputs, table, show_progress="hidden")
    table.select(pick, [table], [run_id, view], show_progress="hidden")
    for trigger in (open_button.click, run_id.submit):
        trigger(lambda value: show_run(history, value), [run_id], view, show_progress="hidden")
    return {
        "refresh": refresh,
        "inputs": inputs,
        "table": table,
        "run_id": run_id,
        "view": view,
        "search": search,
        "mode": mode,
    }
