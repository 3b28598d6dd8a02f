"""The Settings panel: the endpoint's model (listed from the endpoint when it will say),
temperature, reasoning effort, and an API key for this browser session's runs only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast, get_args

import gradio as gr

from llamaberry.core.errors import LlamaberryError
from llamaberry.core.options import bounds, plain_type
from llamaberry.core.settings import Settings
from llamaberry.engine import Engine

from .controls import unchecked
from .runs import run_settings

log = logging.getLogger("llamaberry.ui")

# The endpoint settings take their range and choices from `Settings`, where they are declared
# with the CLI's flags and the environment's variables.
TEMPERATURES = cast("tuple[float, float]", bounds(Settings.model_fields["temperature"]))
EFFORTS = ["default", *get_args(plain_type(Settings.model_fields["reasoning_effort"]))]
# How long the page waits for the endpoint's model list before leaving the box as free text.
MODELS_TIMEOUT = 15.0


@dataclass
class SettingsPanel:
    """The panel's controls."""

    model: gr.Dropdown
    temperature: gr.Number
    effort: gr.Dropdown
    api_key: gr.Textbox
    refresh: gr.Button

    @property
    def inputs(self) -> list[Any]:
        """The values every run takes, in the order its listener reads them."""
        return [self.model, self.temperature, self.effort, self.api_key]


def build_settings_panel(base: Settings) -> SettingsPanel:
    """Lay out the folded Settings panel in the current gradio context, at `base`'s values."""
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
            # Empty unless the person (or `llamaberry ui --temperature`) sets one: a run then
            # sends none, so vote's and drafts' 0.8 and the provider's own default apply, as
            # on the command line. A slider always has a value, so it would always send one.
            temperature = unchecked(
                gr.Number(
                    value=base.temperature,
                    minimum=TEMPERATURES[0],
                    maximum=TEMPERATURES[1],
                    step=0.05,
                    label="Temperature",
                    placeholder="default",
                    info="Leave empty for the default: the model's own (vote and drafts use 0.8).",
                )
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
    return SettingsPanel(model, temperature, effort, api_key, refresh)


def wire_settings_panel(panel: SettingsPanel, app: gr.Blocks, base: Settings) -> None:
    """List the endpoint's models when the page opens (the `models` API endpoint), on Reload
    models, and when a key is entered."""
    listing = models_lister(base)
    models = [panel.api_key, panel.model]
    app.load(listing, models, [panel.model], api_name="models", concurrency_limit=None)
    for trigger in (panel.refresh.click, panel.api_key.submit):
        trigger(listing, models, [panel.model], api_visibility="private")


def models_lister(base: Settings) -> Callable[..., Any]:
    """The listener that fills the model list from the endpoint."""

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

    return load_models
