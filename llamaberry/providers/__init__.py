"""Providers: the endpoints a run can talk to, one module each, and the table that names them.

- `base`: the `ChatClient` interface and what its stream yields (`Delta`, `Completion`...).
- `sdk`: `SDKClient`, a provider reached through its SDK: one call with its rate limit, retries,
  deadline and JSON-schema fallback.
- `groq`, `openai`, `local`: the providers: which SDK each builds, where its key comes from.
- `keys`, `retries`, `errors`, `schema`, `deadline`, `discovery`, `tokens`, `limits`: one job
  each (key lookup; when to retry; SDK errors to ours; JSON replies; a call's timeout; what an
  endpoint says about itself; token estimates; rate limits).
- `transport`, `streams`: the HTTP path a call takes (the SDK over its aiohttp backend, with
  bounds on what an upstream may send), and reading its reply.

Each provider is a row of the provider table (`llamaberry.core.providers`: its name, key and
base-URL variables, default model and settings, what it can do), which every layer reads, and a
module here with its client class, named by the same name in `CLIENTS` below. Adding a provider:
its row there, its module here, one line in `CLIENTS` (a test fails when the two tables disagree).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llamaberry.core.errors import InputError
from llamaberry.core.providers import NAMES, row_of

if TYPE_CHECKING:
    from llamaberry.providers.base import ChatClient

# provider name (a row of core/providers.py) -> "module:class" of its chat client, in this
# package. By name, so that choosing one provider imports only its module, and no provider's
# module imports this table back.
CLIENTS = {
    "groq": "groq:GroqClient",
    "openai": "openai:OpenAICompatibleClient",
    "local": "local:LocalClient",
}
# The provider names, in the table's order.
PROVIDERS = NAMES


def client_class(provider: str) -> type[ChatClient]:
    """The chat-client class of `provider`; `InputError` naming the choices when unknown."""
    where = CLIENTS.get(provider)
    if where is None:
        raise InputError(f"Unknown provider '{provider}'; choose one of: {', '.join(PROVIDERS)}.")
    module, _, name = where.partition(":")
    cls: type[ChatClient] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return cls


def make_client(provider: str, **kwargs: Any) -> ChatClient:
    """Build the chat client for `provider` (one of `PROVIDERS`)."""
    return client_class(provider)(**kwargs)


def hold(provider: str, model: str) -> None:
    """Keep `provider`'s server for `model` up until the process exits, where it runs in this
    process (its row's `in_process`; the web UI builds an engine per run, and would otherwise
    load the model again for each); for any other provider nothing, and nothing is imported."""
    row = row_of(provider)
    if row is not None and row.in_process:
        client_class(provider).hold(model)
