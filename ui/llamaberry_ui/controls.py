"""The pieces the tabs are made of: the question box with Run and Stop, the answer card, the
sections a run's calls stream into, the downloads, and a mode's options drawn from its model.

Each function lays its piece out in the current gradio context and returns its components.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import gradio as gr
from pydantic.fields import FieldInfo

from llamaberry.core.options import Options, bounds, describe, plain_type

EXAMPLES = [
    "How many times does the letter r appear in the word strawberry?",
    "Which is larger, 9.11 or 9.9?",
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. "
    "How much does the ball cost?",
    "Write a four-line poem about patience that does not use the letter e.",
]
HINT = "Enter runs · Shift+Enter starts a new line"
# Largest span of whole numbers drawn as a slider; a wider range gets a number box.
SLIDER_SPAN = 100


@dataclass
class Ask:
    """The question box and its Run and Stop buttons."""

    question: gr.Textbox
    run: gr.Button
    stop: gr.Button

    @property
    def triggers(self) -> list[Any]:
        """What starts a run: Run, or Enter in the box."""
        return [self.run.click, self.question.submit]


def ask(name: str, hint: str) -> Ask:
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
    return Ask(question, run, stop)


def examples(question: gr.Textbox) -> None:
    """The example questions, one click from `question`."""
    gr.Examples(EXAMPLES, inputs=[question], label="Examples")


def answer_card(name: str, summary: str | None = None) -> tuple[gr.Markdown, gr.Markdown]:
    """The answer card: the answer (with a copy button), the whole width, and under it how it
    ended and its cost (`summary` until a run says)."""
    with gr.Column(elem_classes=["lb-answer-row"]):
        answer = gr.Markdown(
            visible=False,
            buttons=["copy"],
            elem_classes=["lb-card", "lb-copy"],
            elem_id=f"{name}-answer",
            scale=3,
            min_width=240,
        )
        summary_box = gr.Markdown(
            summary, elem_classes=["lb-summary"], elem_id=f"{name}-summary", scale=1, min_width=200
        )
    return answer, summary_box


def details(name: str) -> gr.Markdown:
    """The mode's own details under the card (vote's tally, reflect's rewards)."""
    return gr.Markdown(visible=False, elem_classes=["lb-details"], elem_id=f"{name}-details")


def sections(name: str, label: str, placeholder: str) -> gr.Chatbot:
    """The calls of a run (its turns, steps, samples...), one section per call."""
    return gr.Chatbot(
        label=label,
        height=560,
        sanitize_html=True,
        render_markdown=True,
        group_consecutive_messages=False,
        buttons=[],
        feedback_options=None,
        placeholder=placeholder,
        elem_id=f"{name}-sections",
        elem_classes=["lb-sections"],
    )


def downloads(name: str) -> list[gr.DownloadButton]:
    """Download Markdown and Download JSON, hidden until there is a run to take away."""
    with gr.Row():
        markdown = gr.DownloadButton(
            "Download Markdown", visible=False, size="sm", elem_id=f"{name}-download-md"
        )
        json_file = gr.DownloadButton(
            "Download JSON", visible=False, size="sm", elem_id=f"{name}-download-json"
        )
    return [markdown, json_file]


# -- a mode's options ------------------------------------------------------------------------


def options_fold(name: str, options: type[Options], values: Mapping[str, Any]) -> list[Any]:
    """The Options fold of a mode's tab: a control per option of its model, starting at
    `values`; its folded title says what the next run will use, so it need not be opened."""
    if not options.model_fields:
        return []
    names = list(options.model_fields)
    title = options_title(names, [values.get(option) for option in names])
    with gr.Accordion(title, open=False, elem_id=f"{name}-options") as folded, gr.Row():
        controls = [
            option_control(name, option, field, values.get(option))
            for option, field in options.model_fields.items()
        ]
    for control in controls:
        control.change(
            lambda *chosen: gr.update(label=options_title(names, chosen)),
            controls,
            folded,
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        )
    return controls


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


# -- listeners -------------------------------------------------------------------------------


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
