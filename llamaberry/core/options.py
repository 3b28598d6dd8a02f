"""A mode's options: one pydantic model per mode, the only place their ranges are checked.

Every way of giving an option (a keyword to `engine.run`, an `Engine(...)` default, the
`LLAMABERRY_<NAME>` environment variable, a CLI flag, a control in the web UI) ends in
`resolve`, so a bad value gets the same one line wherever it came from.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from llamaberry.core.errors import InputError


class Options(BaseModel):
    """Base of every mode's options model. Subclasses declare fields with their ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def env_name(option: str) -> str:
    """The environment variable that sets `option` ('turns' -> 'LLAMABERRY_TURNS')."""
    return f"LLAMABERRY_{option.upper()}"


def from_environment(options: type[Options]) -> dict[str, str]:
    """The values the environment sets for these options (blank variables count as unset)."""
    found = {}
    for name in options.model_fields:
        raw = os.environ.get(env_name(name))
        if raw is not None and raw.strip():
            found[name] = raw.strip()
    return found


def resolve(
    mode: str,
    options: type[Options],
    given: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> Options:
    """Validate `given` over `defaults` over the environment; `InputError` names what is wrong.

    `given` may only hold this mode's options; `defaults` may hold other modes' too (an
    engine's defaults serve every mode), so only the ones this mode declares are taken.
    """
    unknown = [name for name in given if name not in options.model_fields]
    if unknown:
        known = ", ".join(options.model_fields) or "none"
        raise InputError(f"{mode} has no option '{unknown[0]}' (its options: {known}).")
    environment = from_environment(options)
    values: dict[str, Any] = dict(environment)
    sources = dict.fromkeys(environment, "environment")
    for layer in (defaults or {}, given):
        for name, value in layer.items():
            if name in options.model_fields and value is not None:
                values[name] = value
                sources[name] = "given"
    try:
        return options.model_validate(values)
    except ValidationError as error:
        raise InputError(explain(error, options, sources)) from None


def explain(
    error: ValidationError, options: type[Options], sources: Mapping[str, str] | None = None
) -> str:
    """One line for the first problem in `error`, in the words a person would use."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    if name not in options.model_fields:
        # A rule between options (a model validator): its message is the line.
        message = str(first["msg"]).removeprefix("Value error, ")
        return message if message.endswith(".") else message + "."
    line = f"{name} must be {describe(options.model_fields[name])} (got {_shown(first['input'])})."
    if (sources or {}).get(name) == "environment":
        line += f" It comes from {env_name(name)}."
    return line


def describe(field: FieldInfo) -> str:
    """What a field accepts: 'a whole number from 1 to 10', 'one of low, medium, high'."""
    kind = _plain_type(field.annotation)
    choices = get_args(kind) if get_origin(kind) is Literal else ()
    if choices:
        return "one of " + ", ".join(str(c) for c in choices)
    low, high = bounds(field)
    noun = "a whole number" if kind is int else "a number" if kind is float else "a value"
    if low is not None and high is not None:
        return f"{noun} from {_shown(low)} to {_shown(high)}"
    if low is not None:
        return f"{noun} of at least {_shown(low)}"
    if high is not None:
        return f"{noun} of at most {_shown(high)}"
    return noun


def bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    """A field's inclusive range as declared (None where it is open)."""
    low: Any = None
    high: Any = None
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = rule.ge
        elif isinstance(rule, annotated_types.Gt):
            low = rule.gt
        elif isinstance(rule, annotated_types.Le):
            high = rule.le
        elif isinstance(rule, annotated_types.Lt):
            high = rule.lt
    return low, high


def plain_type(field: FieldInfo) -> Any:
    """A field's type without `| None`: int, float, str, bool or a Literal."""
    return _plain_type(field.annotation)


def _plain_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return kept[0]
    return annotation


def _shown(value: Any) -> str:
    # 3.0 from a slider and "3" from the environment read as the 3 a person typed.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return repr(value)
        return _shown(number) if value.strip() == value else repr(value)
    return repr(value)
