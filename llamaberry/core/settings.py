"""Settings: every knob of the endpoint and the engine, declared once with its default, its
allowed range and the ways it can be given (environment variable, CLI flag, `Engine` keyword). A mode's own options (refine's turns, steps' bounds...) live in
the mode's options model instead (see `options.py`).

An explicit argument wins over the environment, which wins over the default. A bad value gets
one line that names the setting; nothing is sent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from llamaberry.core.errors import InputError
from llamaberry.core.options import env_name
from llamaberry.core.providers import DEFAULT, DEFAULT_MODEL, KEYLESS, NAMES, PROVIDERS, ROWS
from llamaberry.core.providers import on_demo_model as on_demo_model
from llamaberry.core.redact import redact, redact_data

# The provider setting takes the names in the provider table (core/providers.py).
if TYPE_CHECKING:
    ProviderName = str
else:
    ProviderName = Literal[NAMES]
# What a run on the keyless provider (the embedded model) gets for settings not given.
KEYLESS_DEFAULTS: dict[str, Any] = KEYLESS.settings_defaults()


def setting(
    default: Any,
    description: str,
    *,
    flag: bool = False,
    engine: bool = False,
    env: bool = True,
    short_flag: str | None = None,
    shown_default: str | None = None,
    **rules: Any,
) -> Any:
    """A field of `Settings`, with the ways a user can give it besides `Settings.load(...)`.

    `env`: the `LLAMABERRY_<NAME>` variable sets it; `flag`: every endpoint-taking CLI command
    has `--name` (`short_flag` too; a bool is `--name/--no-name`), with `description` as its
    help; `engine`: `Engine(name=...)` takes it. `shown_default` replaces the default in the
    flag's help ('' shows none). `rules` are pydantic's (ge, le, min_length...).
    """
    ways: dict[str, Any] = {"flag": flag, "engine": engine, "env": env}
    if short_flag is not None:
        ways["short_flag"] = short_flag
    if shown_default is not None:
        ways["shown_default"] = shown_default
    return Field(default, description=description, json_schema_extra=ways, **rules)


class Settings(BaseModel):
    """Everything an engine needs to know, declared once: each field says how a user gives it
    (see `setting`); the CLI's flags, `Engine`'s arguments and the environment variables are
    read from here. The README's table lists them for users."""

    provider: ProviderName = setting(
        DEFAULT.name,
        ", ".join(row.choice for row in ROWS[:-1]) + f", or {ROWS[-1].choice}.",
        flag=True,
        engine=True,
        shown_default="",
    )
    model: str = setting(
        DEFAULT_MODEL,
        "Model id, or a .gguf file for --provider local.",
        flag=True,
        engine=True,
        short_flag="-m",
        min_length=1,
    )
    # The SDKs read their own variables (GROQ_API_KEY, OPENAI_API_KEY) when none is given.
    api_key: SecretStr | None = setting(
        None, "The provider's API key.", engine=True, env=False, repr=False
    )
    base_url: str | None = setting(
        None, "Endpoint URL: a host for groq, a .../v1 URL for openai.", flag=True, engine=True
    )
    temperature: float | None = setting(
        None, "Sampling temperature, 0 to 2.", flag=True, engine=True, ge=0.0, le=2.0
    )
    # Reasoning models spend hidden tokens from this budget before any visible text.
    max_tokens: int = setting(
        4096,
        "Completion-token budget per call, hidden reasoning included.",
        flag=True,
        engine=True,
        ge=1,
        le=131072,
    )
    reasoning_effort: Literal["low", "medium", "high"] | None = setting(
        None, "How hard a reasoning model thinks before it answers.", flag=True, engine=True
    )
    # One call, from its first send to its last token, retries and their waits included.
    timeout: float = setting(
        120.0, "Most seconds one call may take, retries included.", flag=True, engine=True, gt=0
    )
    # The whole run (every call of it); None means no bound beyond each call's.
    run_timeout: float | None = setting(
        None,
        "Most seconds a whole run may take.",
        flag=True,
        engine=True,
        shown_default="no bound beyond --timeout",
        gt=0,
    )
    rpm: int | None = setting(
        None, "Requests-per-minute limit shared by all runs.", flag=True, engine=True, ge=1
    )
    tpm: int | None = setting(
        None, "Tokens-per-minute budget shared by all runs.", flag=True, engine=True, ge=1
    )
    max_wait: float = setting(90.0, "Longest retry-after worth waiting for, in seconds.", ge=0)
    max_retries: int = setting(
        3, "Retries of a call after 429, 5xx, timeouts or dropped connections.", ge=0, le=10
    )
    max_question_chars: int = setting(20000, "Longest question accepted, in characters.", ge=1)
    concurrency: int = setting(100, "Most HTTP connections open at once.", ge=1, le=10000)
    # None: ask the endpoint; 0: never check before sending.
    context: int | None = setting(
        None,
        "The model's context window in tokens, if the server does not report it; 0 turns the "
        "check off.",
        flag=True,
        engine=True,
        ge=0,
    )
    loop_guard: bool = setting(
        True, "Stop a reply that keeps repeating itself.", flag=True, engine=True
    )
    # True when nothing chose a provider and no key was found, so the embedded model runs.
    _embedded: bool = PrivateAttr(False)

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, values: Any) -> Any:
        # A provider's row may have its own defaults (the tiny embedded model's budget) for
        # whatever was not given.
        row = PROVIDERS.get(str(values.get("provider"))) if isinstance(values, dict) else None
        if row is None:
            return values
        fields = cls.model_fields
        own = {k: v for k, v in row.settings_defaults().items() if v != fields[k].default}
        if own:
            return {**own, **{k: v for k, v in values.items() if v is not None}}
        return values

    @property
    def embedded(self) -> bool:
        """Whether the embedded local model was chosen because no provider or key was set."""
        return self._embedded

    @field_validator("reasoning_effort", "base_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, value: str | None) -> str | None:
        return check_base_url(value)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build settings from explicit values (None means unset), then the environment."""
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            raw = os.environ.get(variable)
            if raw not in (None, ""):
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        embedded = "provider" not in values and _wants_embedded(values)
        if embedded:
            values["provider"] = KEYLESS.name
        try:
            settings = cls(**values)
        except ValidationError as error:
            raise InputError(_explain(error, overrides)) from None
        settings._embedded = embedded
        url_variable = PROVIDERS[settings.provider].base_url_variable
        if settings.base_url is None and url_variable:
            # The SDKs' own variables, resolved here so a run records the endpoint it used.
            settings.base_url = check_base_url(os.environ.get(url_variable) or None, url_variable)
        return settings

    def public(self) -> dict[str, Any]:
        """The settings worth recording with a run (never the key, nor credentials in a URL)."""
        return redact_data(
            self.model_dump(
                include={"provider", "model", "base_url", "temperature", "max_tokens"}
                | {"reasoning_effort", "context", "loop_guard"}
            )
        )


def ways(name: str) -> dict[str, Any]:
    """How the setting `name` can be given (see `setting`)."""
    extra = Settings.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _given_by(way: str) -> tuple[str, ...]:
    return tuple(name for name in Settings.model_fields if ways(name).get(way))


# setting name -> environment variable
ENVIRONMENT = {name: env_name(name) for name in _given_by("env")}
# The settings `Engine(...)` takes as keywords (tests check its signature names exactly these).
ENGINE_SETTINGS = _given_by("engine")
# The settings every endpoint-taking CLI command has a flag for.
FLAG_SETTINGS = _given_by("flag")


def _wants_embedded(values: dict[str, Any]) -> bool:
    """No provider chosen: the keyless provider's embedded model runs unless a key or an
    endpoint says the default provider (Groq).

    A model name that is not a .gguf file means a hosted model was wanted, so that case stays
    on the default provider and gets the missing-key line rather than a surprise local run.
    """
    if values.get("api_key") or _from_environment(DEFAULT.key_variable):
        return False
    if values.get("base_url") or _from_environment(DEFAULT.base_url_variable):
        return False
    model = values.get("model")
    return model is None or str(model).endswith(".gguf") or model == KEYLESS.default_model


def _from_environment(variable: str | None) -> str | None:
    return os.environ.get(variable) if variable else None


def check_base_url(url: str | None, source: str | None = None) -> str | None:
    """`url` when it is an http(s) URL with a host; else `InputError` naming `source`.

    Checked before any client exists, so a typo is one line instead of an httpx traceback.
    """
    if url is None:
        return None
    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it is what checks the port
    except ValueError as error:
        problem = str(error)
    else:
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            problem = "it contains a space or a control character"
        elif parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host"
    if problem is None:
        return url
    # Without a source, pydantic's error names the setting; with one, we do.
    if source is None:
        raise ValueError(f"not a usable URL: {problem}")
    raise InputError(f"Invalid {source} ({redact(url)!r}): not a usable URL: {problem}.")


def _explain(error: ValidationError, overrides: dict[str, Any]) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "setting"
    source = (
        ENVIRONMENT[name]
        if overrides.get(name) is None and name in ENVIRONMENT
        else name.replace("_", "-")
    )
    value = first.get("input")
    shown = "" if name == "api_key" else f" (got {value!r})"
    return f"Invalid {source}{shown}: {first['msg']}."
