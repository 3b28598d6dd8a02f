"""The provider table: one row per provider, saying what the other parts need to know about it
without importing its client. Each row names the provider, where its key and base URL come from,
the defaults a run on it starts from, what its line says when a key is missing, and what it can
do. The client modules sit in `llamaberry/providers/` (one per row, listed by the same names in
that package's `CLIENTS`); the settings, the `--provider` flag, the key lookup, redaction, prices
and the error lines read the rows here instead of naming providers.

Adding a provider: a row here (and in `ROWS`), and its client module in `llamaberry/providers/`
with one line in its `CLIENTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

# The model a run asks for unless told otherwise.
DEFAULT_MODEL = "openai/gpt-oss-120b"
# Where the openai SDK sends requests when no base URL is given.
OPENAI_API_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Provider:
    """One provider: where its key and endpoint come from, its defaults, what it can do."""

    name: str  # what --provider, LLAMABERRY_PROVIDER and Engine(provider=...) take
    title: str  # how a line for people names it
    choice: str  # its part of --provider's help
    # The environment variable its SDK reads the key from (None: it takes no key), and when a
    # key is needed: "always", "hosted" (only for the provider's own API, with no base URL
    # given: a server of one's own may take none) or "never".
    key_variable: str | None
    needs_key: Literal["always", "hosted", "never"]
    missing_key: str  # the line when a needed key is missing (MissingKeyError)
    # The environment variable its SDK reads the base URL from (None: it takes none).
    base_url_variable: str | None
    default_model: str = DEFAULT_MODEL
    # Settings a run on it starts from when they are not given (beside `default_model`).
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Said on stderr when no base URL is given, where that is probably not what was meant.
    without_base_url: str = ""
    # What it can do:
    # - a base URL may name a server of one's own that says more about itself beside its API
    #   (a context window, its slots: see providers/discovery.py); a hosted API does not;
    describes_itself: bool = False
    # - idle connections may be kept for the next call;
    keep_alive: bool = True
    # - it enforces a JSON schema's length limits (minLength...): only a server that compiles
    #   the whole schema into a grammar; strict mode elsewhere refuses those keywords;
    schema_lengths: bool = False
    # - someone bills its tokens (a run's cost is looked up); False: it costs nothing;
    billed: bool = True
    # - its default model is a tiny demo (a line under its answers says so);
    demo_model: bool = False
    # - it runs in this process: its client starts a server here on first use and stops it
    #   when the last client lets go, so a surface that builds an engine per run (the web UI)
    #   holds it up between them (`llamaberry.providers.hold`).
    in_process: bool = False
    # - it serves a Batch API (/files and /batches, OpenAI's shape): `eval --batch` sends its
    #   calls there; on a row without one it is refused in one line before anything starts.
    #   (A base URL may still name a server without one: `Batcher.check` asks it first.)
    batch_api: bool = False

    def settings_defaults(self) -> dict[str, Any]:
        """The settings a run on this provider gets for those not given."""
        return {"model": self.default_model, **self.defaults}


GROQ = Provider(
    name="groq",
    title="Groq",
    choice="groq (default with GROQ_API_KEY)",
    key_variable="GROQ_API_KEY",
    needs_key="always",
    missing_key=(
        "No API key: set GROQ_API_KEY (get one at console.groq.com), or use "
        "--provider openai --base-url URL for a local OpenAI-compatible server."
    ),
    base_url_variable="GROQ_BASE_URL",
    batch_api=True,
)

OPENAI = Provider(
    name="openai",
    title="OpenAI-compatible",
    choice="openai for any OpenAI-compatible server",
    key_variable="OPENAI_API_KEY",
    needs_key="hosted",
    missing_key=(
        "--provider openai without --base-url means OpenAI's own API, which needs "
        "OPENAI_API_KEY; for a local OpenAI-compatible server give --base-url "
        "http://HOST:PORT/v1 (or set OPENAI_BASE_URL)."
    ),
    base_url_variable="OPENAI_BASE_URL",
    # Said out loud: a forgotten --base-url would otherwise send every question to OpenAI.
    without_base_url=(
        f"no --base-url, so this uses OpenAI's own API ({OPENAI_API_URL}); for a local server "
        "give --base-url http://HOST:PORT/v1 or set OPENAI_BASE_URL."
    ),
    describes_itself=True,
    # OpenAI's own API has one; a server of one's own (vLLM, llama.cpp) may not.
    batch_api=True,
)

# llama.cpp in this process (providers/local.py), on a GGUF file or the embedded demo model.
LOCAL = Provider(
    name="local",
    title="local",
    choice="local to run a GGUF model here (default without a key)",
    key_variable=None,
    needs_key="never",
    missing_key="",
    base_url_variable=None,
    default_model="SmolLM2-135M-Instruct",
    # A tiny model loops until its budget ends, so a small budget keeps a run on it short; it
    # is slow next to a hosted one, and a request may queue behind another slot.
    defaults=MappingProxyType({"max_tokens": 512, "timeout": 600.0}),
    describes_itself=True,
    # llama.cpp closes the connection after every streamed reply although its headers say
    # keep-alive, so a request sent on a pooled connection in that moment fails ("server
    # disconnected"). Loopback connects cost nothing, so none is kept.
    keep_alive=False,
    # llama.cpp turns the whole JSON schema into a grammar, length limits included.
    schema_lengths=True,
    billed=False,
    demo_model=True,
    in_process=True,
    # llama.cpp's server has no /files or /batches (batch_api stays False).
)

ROWS: tuple[Provider, ...] = (GROQ, OPENAI, LOCAL)
PROVIDERS: Mapping[str, Provider] = MappingProxyType({row.name: row for row in ROWS})
NAMES: tuple[str, ...] = tuple(PROVIDERS)
# Chosen when nothing says which provider, unless no key is found for it (a key typed into the
# web UI's page that runs the keyless one asks for it too)...
DEFAULT = GROQ
# ...and then this one runs, on its default model.
KEYLESS = LOCAL


def row_of(name: str) -> Provider | None:
    """The row of the provider `name`, or None when there is no such provider."""
    return PROVIDERS.get(name)


def on_demo_model(provider: str, model: str) -> bool:
    """Whether a run was answered by a provider's tiny demo model (not a model of one's own)."""
    row = PROVIDERS.get(provider)
    return row is not None and row.demo_model and model == row.default_model
