"""The registry of modes. Each mode is declared once, in its own module, as a `ModeSpec`
(name, description, options model, runner, and its result type, which lives with the schema in
`core.results`); this list is the one place that names them. The engine, the CLI's `--mode`
and option flags, compare, eval, the serve endpoint, the history filters and the web UI all
read it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from llamaberry.core.errors import InputError
from llamaberry.core.options import Options, resolve
from llamaberry.modes import drafts, prompts, refine, reflect, single, steps, vote
from llamaberry.modes.fingerprint import module_fingerprint
from llamaberry.run.runner import ModeSpec

# Order matters: it is the order of compare's columns, eval's rows and every list of choices.
# One mode a line, so adding a mode adds a line here.
MODES: dict[str, ModeSpec] = {
    spec.name: spec
    for spec in (
        single.MODE,
        refine.MODE,
        steps.MODE,
        vote.MODE,
        drafts.MODE,
        reflect.MODE,
    )
}

# What `ask` runs when no mode is named.
DEFAULT_MODE = "refine"


def names() -> list[str]:
    """Every mode's name, in registry order."""
    return list(MODES)


def default_names() -> list[str]:
    """The modes compare and eval run when none are named (the costly ones are opt-in)."""
    return [name for name, spec in MODES.items() if spec.default]


def get(name: str) -> ModeSpec:
    """The mode called `name`; `InputError` lists the choices when there is none."""
    spec = MODES.get(name)
    if spec is None:
        raise InputError(f"Unknown mode '{name}'; choose from: {', '.join(MODES)}.")
    return spec


@functools.cache
def prompt_version(name: str) -> str:
    """Mode `name`'s prompt version: a fingerprint of the prompt texts and options it sends
    (see `fingerprint`), worked out on first use. Each run records it, and an eval reuses a
    saved run only when it was made with the same one."""
    spec = get(name)
    return module_fingerprint(prompts, sys.modules[spec.run.__module__])


def check(modes: Any) -> list[str]:
    """The modes asked for, without repeats; `InputError` for an unknown one or none."""
    chosen: list[str] = []
    for mode in modes:
        get(mode)
        if mode not in chosen:
            chosen.append(mode)
    if not chosen:
        raise InputError("Give at least one mode.")
    return chosen


def option_fields() -> dict[str, tuple[FieldInfo, list[str]]]:
    """Every option of every mode: its field and the modes that take it, in registry order."""
    found: dict[str, tuple[FieldInfo, list[str]]] = {}
    for name, spec in MODES.items():
        for option, field in spec.options.model_fields.items():
            if option in found:
                found[option][1].append(name)
            else:
                found[option] = (field, [name])
    return found


def own_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options in `options` that mode `name` takes (those its options model declares);
    an engine's defaults, a compare or an eval hold every mode's options at once."""
    taken = get(name).options.model_fields
    return {option: value for option, value in options.items() if option in taken}


def options_for(
    name: str, given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> Options:
    """Mode `name`'s options from `given` (only its own), over `defaults`, over the environment."""
    spec = get(name)
    return resolve(name, spec.options, given, defaults)


def check_defaults(defaults: Mapping[str, Any]) -> None:
    """Refuse an option no mode takes, and any value (given or from the environment) that a
    mode's options model rejects, before anything is sent."""
    fields = option_fields()
    for option in defaults:
        if option not in fields:
            raise InputError(f"Unknown option '{option}'; the options are: {', '.join(fields)}.")
    for name, spec in MODES.items():
        resolve(name, spec.options, {}, defaults)
