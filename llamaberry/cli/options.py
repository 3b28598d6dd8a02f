"""What the commands share for reading the command line: the mode and endpoint flags (built
from the registry and from `Settings`, only when a command that takes them is used), and the
questions, mode lists and addresses a user types.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import click

from llamaberry.core.errors import InputError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from llamaberry.core.settings import Settings

ParamsFactory = Callable[[], list[click.Parameter]]


class LazyCommand(click.Command):
    """A command with parameters read from the mode registry (`modes=`) and from `Settings`
    (`endpoint=True`: a flag per endpoint setting).

    They are built the first time the command parses or shows its help, so the registry and
    pydantic are never imported by `llamaberry --help` or by the commands that do not take them.
    """

    def __init__(
        self, *args: Any, modes: ParamsFactory | None = None, endpoint: bool = False, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self._pending: tuple[ParamsFactory | None, bool] | None = (modes, endpoint)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._pending is not None:
            (modes, endpoint), self._pending = self._pending, None
            if modes is not None:
                # After the arguments, before the command's own options.
                at = next((i for i, p in enumerate(self.params) if isinstance(p, click.Option)), 0)
                self.params[at:at] = modes()
            if endpoint:
                self.params.extend(endpoint_params())
        return super().get_params(ctx)


class LazyGroup(LazyCommand, click.Group):
    """A command group with parameters built when first used (see `LazyCommand`)."""


def flag_for(name: str, field: FieldInfo, help_text: str) -> click.Option:
    """The flag that gives the pydantic field `name`: `--name` (and the field's `short_flag`),
    `--name/--no-name` for a bool, typed but not range-checked (the model checks ranges, so
    every way in gives the same error line). Left out, its value is None."""
    from llamaberry.core.options import plain_type

    kind = plain_type(field)
    dashed = name.replace("_", "-")
    declared = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    short = declared.get("short_flag")
    decls = [f"--{dashed}/--no-{dashed}" if kind is bool else f"--{dashed}"]
    if isinstance(short, str):
        decls.append(short)
    click_type: Any = None
    if get_origin(kind) is Literal:
        click_type = click.Choice([str(c) for c in get_args(kind)])
    elif kind is not bool:
        click_type = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
    return click.Option([*decls, name], type=click_type, default=None, help=help_text)


def mode_choice(*, with_default: bool = False, **kwargs: Any) -> ParamsFactory:
    """A `--mode` option whose choices are the registered modes (and the registry's default
    mode as its default, `with_default`)."""

    def make() -> list[click.Parameter]:
        from llamaberry import modes

        if with_default:
            kwargs.update(default=modes.DEFAULT_MODE, show_default=True)
        return [click.Option(["--mode"], type=click.Choice(modes.names()), **kwargs)]

    return make


def mode_options(*extra: ParamsFactory) -> ParamsFactory:
    """`extra`'s parameters, then one flag per mode option (`--turns`, `--samples`...)."""

    def make() -> list[click.Parameter]:
        from llamaberry import modes
        from llamaberry.core import options

        made = [param for factory in extra for param in factory()]
        for name, (field, takers) in modes.option_fields().items():
            help_text = (
                f"{field.description or name} For {', '.join(takers)}: "
                f"{options.describe(field)} [default {field.default}; "
                f"env {options.env_name(name)}]."
            )
            made.append(flag_for(name, field, help_text))
        return made

    return make


def take_options(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the mode options a command received (the ones given) out of its parameters."""
    from llamaberry import modes

    return {
        name: value
        for name in modes.option_fields()
        if (value := params.pop(name, None)) is not None
    }


def endpoint_params() -> list[click.Parameter]:
    """One flag per endpoint setting `Settings` declares with `flag=True` (`--model`...)."""
    from llamaberry.core.settings import (
        ENVIRONMENT,
        FLAG_SETTINGS,
        KEYLESS_DEFAULTS,
        Settings,
        ways,
    )

    made: list[click.Parameter] = []
    for name in FLAG_SETTINGS:
        field = Settings.model_fields[name]
        shown = ways(name).get("shown_default", _shown_default(field.default))
        if name in KEYLESS_DEFAULTS:  # what a run on the embedded model gets instead
            shown += f"; {_shown_default(KEYLESS_DEFAULTS[name])} without a key"
        where = ([f"default {shown}"] if shown else []) + [f"env {ENVIRONMENT[name]}"]
        help_text = f"{(field.description or name).rstrip('.')} [{'; '.join(where)}]."
        made.append(flag_for(name, field, help_text))
    return made


def _shown_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)  # 600.0 -> 600


def endpoint_settings(params: dict[str, Any]) -> Settings:
    """The settings the endpoint flags a command received give (over the environment)."""
    from llamaberry.core.settings import FLAG_SETTINGS, Settings

    return Settings.load(**{name: params.get(name) for name in FLAG_SETTINGS})


def parse_modes(text: str | None) -> list[str] | None:
    """'single,refine' -> ['single', 'refine']; None stays None (the default set)."""
    from llamaberry import modes as registry

    if text is None:
        return None
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in registry.MODES]
    if unknown or not modes:
        raise InputError(
            f"--modes takes a comma-separated list of {', '.join(registry.MODES)} (got {text!r})."
        )
    return modes


def read_question(question: str) -> str:
    """The question argument, or stdin when it is `-`."""
    if question != "-":
        # Bytes that are not UTF-8 reach us as lone surrogates (surrogateescape): no server
        # could read them, so they are the caller's mistake, said before anything is sent.
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as error:
            raise click.BadParameter(
                f"not UTF-8 text (character {error.start + 1} is a byte that is not UTF-8).",
                param_hint="QUESTION",
            ) from None
        return question
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"stdin is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})."
        ) from None


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps a server to this machine (`ui`, `serve`)."""
    return host in ("localhost", "::1") or host.startswith("127.")
