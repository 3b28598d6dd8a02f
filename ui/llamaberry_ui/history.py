"""The History tab: browse saved runs and reopen one.

The pure functions (`history_rows`, `show_run`) read the store and return plain data, so they
are tested without a browser; `build_history_tab` lays them out with gradio inside whatever
`gr.Tab` the page mounts it in.
"""

# No `from __future__ import annotations` here: gradio reads `pick`'s `gr.SelectData`
# annotation at run time to know it wants the selection event.
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from llamaberry import modes as registry
from llamaberry.core.errors import LlamaberryError
from llamaberry.core.prices import with_list_price
from llamaberry.core.redact import redact, redact_data
from llamaberry.core.results import Run, Status
from llamaberry.store import Store, run_markdown

from .views import RunView, shown

HEADERS = ["id", "started (UTC)", "mode", "model", "status", "tokens", "seconds", "question"]
# The question gets the room; the id stays (a click reads it) but narrow.
WIDTHS: list[str | int] = ["10%", "13%", "7%", "13%", "8%", "8%", "8%", "33%"]
# The columns a phone shows; the others (id, when, model, cost) need a wider screen.
PHONE_COLUMNS = ["mode", "status", "question"]
NOTHING = "No saved run matches. Clear the search or pick another mode."
PROMPT = "Pick a run in the table (or paste its id) to reopen it."


def phone_css() -> str:
    """CSS that fits the table to a phone: only `PHONE_COLUMNS`, headers and one-word cells on
    one line, the question given what is left.

    Gradio sizes the columns from `WIDTHS` as shares of the whole table, so with columns hidden
    the rest were a few letters wide. Mode and status get the width of their longest value (read
    from the registry and the run statuses, so a new mode fits too). The header and the body are
    separate tables, so each column is given the same width in both.
    """
    longest = {
        "mode": max(len(name) for name in ["mode", *registry.names()]),
        "status": max(len(status) for status in ["status", *get_args(Status)]),
    }
    # A monospace character is 1ch; the 18px are the cell's padding (8px a side) and slack.
    fixed = {header: f"calc({chars}ch + 18px)" for header, chars in longest.items()}
    # The question gets what the others leave (cqw: the table's own width), but never so
    # little that it reads a word a line; past that the table scrolls sideways instead.
    rest = f"max(7rem, calc(100cqw - {' - '.join(fixed.values())}))"
    hidden, rules = [], ["#history-table .virtual-table-viewport { container-type: inline-size; }"]
    for number, header in enumerate(HEADERS, start=1):
        cells = (
            f"#history-table th:nth-child({number}), "
            f"#history-table .virtual-row > :nth-child({number})"
        )
        if header not in PHONE_COLUMNS:
            hidden.append(cells)
        else:
            width = fixed.get(header, rest)
            rules.append(
                f"{cells} {{ width: {width} !important; min-width: {width} !important; "
                f"max-width: {width} !important; }}"
            )
    rules.append(",\n".join(hidden) + " { display: none !important; }")
    rules.append("#history-table th .header { white-space: nowrap !important; }")
    return "@media (max-width: 640px) {\n" + "\n".join(rules) + "\n}\n"


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


def open_run(store: Store, run_id: str) -> tuple[RunView | None, str]:
    """The saved run as the live view shows it, or None and one line saying why not."""
    if not run_id or not run_id.strip():
        return None, PROMPT
    try:
        return RunView.from_run(store.get(run_id.strip())), ""
    except LlamaberryError as error:
        return None, f"**{shown(str(error))}**"


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
    A reopened run is drawn as a live one is: the answer card, then its turns or steps.
    """
    import gradio as gr

    from . import controls

    on = _listeners(store or Store())
    with gr.Row(elem_classes=["lb-history-filters"]):
        search = gr.Textbox(
            label="Search", placeholder="text in a question or answer", scale=3, min_width=180
        )
        modes = ["all", *registry.names()]
        mode = gr.Dropdown(modes, value="all", label="Mode", scale=1, min_width=100)
        reload = gr.Button("Refresh", scale=0, min_width=90)
    table = gr.Dataframe(
        headers=HEADERS,
        value=lambda: on["refresh"]("all", ""),
        type="array",
        interactive=False,
        wrap=True,
        column_widths=WIDTHS,
        max_height=420,
        elem_id="history-table",
    )
    empty = gr.Markdown(NOTHING, visible=False, elem_id="history-empty")
    with gr.Row():
        run_id = gr.Textbox(
            label="Run id", placeholder="pick a row, or paste an id", scale=3, min_width=160
        )
        open_button = gr.Button("Open", scale=0, min_width=80)
    answer, summary = controls.answer_card("history", PROMPT)
    details = controls.details("history")
    placeholder = "The run's calls (turns, steps, samples...) appear here."
    sections = controls.sections("history", "Calls", placeholder)
    markdown, json_file = controls.downloads("history")

    inputs = [mode, search]
    for trigger in (reload.click, search.submit, mode.change):
        trigger(on["listed"], inputs, [table, empty], show_progress="hidden")
    shown_parts = [answer, summary, details, sections, markdown, json_file]
    table.select(on["pick"], [table], [run_id, *shown_parts], show_progress="hidden")
    for trigger in (open_button.click, run_id.submit):
        trigger(on["reopen"], [run_id], shown_parts, show_progress="hidden")
    return {
        "refresh": on["refresh"],
        "listed": on["listed"],
        "inputs": inputs,
        "table": table,
        "empty": empty,
        "run_id": run_id,
        "view": summary,
        "answer": answer,
        "sections": sections,
        "search": search,
        "mode": mode,
    }


def _listeners(history: Store) -> dict[str, Callable[..., Any]]:
    """The tab's listeners over `history`: list the runs (`refresh`, and `listed` with the
    no-match line), `reopen` a run by id, and `pick` one from the table."""
    import gradio as gr

    def refresh(mode: str, search: str) -> list[list[Any]]:
        try:
            return history_rows(history, mode=mode, search=search)
        except LlamaberryError as error:
            gr.Warning(str(error))
            return []

    def listed(mode: str, search: str) -> tuple[Any, Any]:
        rows = refresh(mode, search)
        return rows, gr.update(visible=not rows)

    def reopen(run_id: str) -> tuple[Any, ...]:
        view, why = open_run(history, run_id)
        if view is None:
            return (
                gr.update(value="", visible=False),
                why,
                gr.update(value="", visible=False),
                gr.update(value=[], label="Calls"),
                gr.update(visible=False),
                gr.update(visible=False),
            )
        answer, details = view.answer_markdown(), view.details_markdown()
        markdown, json_file = _export(view)
        return (
            gr.update(value=answer, visible=bool(answer)),
            view.summary_markdown() + (f"\n\n{view.error_markdown()}" if view.error else ""),
            gr.update(value=details, visible=bool(details)),
            gr.update(value=view.messages(), label=view.look.sections),
            gr.update(value=markdown, visible=markdown is not None),
            gr.update(value=json_file, visible=json_file is not None),
        )

    def pick(table: list[list[Any]], event: gr.SelectData) -> tuple[Any, ...]:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        try:
            run_id = str(table[row][0])
        except (IndexError, KeyError, TypeError):
            return ("", *reopen(""))
        return (run_id, *reopen(run_id))

    return {"refresh": refresh, "listed": listed, "reopen": reopen, "pick": pick}


def _export(view: RunView) -> tuple[str | None, str | None]:
    """The reopened run's Markdown and JSON files, as the live tabs offer them."""
    if view.run is None:
        return None, None
    markdown, json_file = export_run(view.run)
    return str(markdown), str(json_file)


def export_run(run: Run) -> tuple[Path, Path]:
    """Write a run as Markdown and as JSON files for the page to offer; return their paths.

    Both pass through redact(), as every export does, so no key leaves in a download.
    """
    folder = Path(tempfile.mkdtemp(prefix="llamaberry-run-"))
    markdown = folder / f"llamaberry-{run.mode}-{run.id}.md"
    markdown.write_text(redact(run_markdown(run)), encoding="utf-8")
    json_file = folder / f"llamaberry-{run.mode}-{run.id}.json"
    data = redact_data(with_list_price(run).model_dump(mode="json"))
    json_file.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return markdown, json_file
