"""Context windows: learning how much a model can take, and making each request fit it.

The window is learned once per client (so once per engine) from wherever the endpoint
publishes it: the model list (Groq's `context_window`, vLLM's `max_model_len`, and the names
other servers use), llama.cpp's `GET /props` (`n_ctx`) or Ollama's `POST /api/show`
(`num_ctx`). `LLAMABERRY_CONTEXT` overrides all of that. When nothing says, nothing is
checked before sending and the server's own "too long" is the answer.

Token counts are estimated from characters, generously: a request we judge to fit does fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llamaberry.core.errors import ContextTooLongError
from llamaberry.core.results import Message, Usage

if TYPE_CHECKING:
    from llamaberry.providers.clients import ChatClient

log = logging.getLogger("llamaberry")

# Model-list fields that give the window, in the order they are trusted.
_LIST_FIELDS = ("context_window", "max_model_len", "context_length", "max_context_length")
# Tokens a chat template adds around each message, and once around the whole conversation.
_PER_MESSAGE = 8
_PER_REQUEST = 8
# Seconds to wait for a server to say what its window is; the answer is optional.
_DISCOVERY_TIMEOUT = 10.0
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)

_learned: weakref.WeakKeyDictionary[ChatClient, asyncio.Future[int | None]] = (
    weakref.WeakKeyDictionary()
)


def estimate_tokens(text: str) -> int:
    """A generous estimate of `text`'s tokens: three ASCII characters, or one other, a token."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)


def estimate_prompt(messages: Sequence[Message]) -> int:
    """A generous estimate of the prompt tokens `messages` take, chat template included."""
    return _PER_REQUEST + sum(estimate_tokens(m.content) + _PER_MESSAGE for m in messages)


# -- learning the window --------------------------------------------------------------------


async def context_window(client: ChatClient) -> int | None:
    """The model's context window as the endpoint tells it, asked once per client."""
    future = _learned.get(client)
    if future is None:
        future = asyncio.get_running_loop().create_future()
        _learned[client] = future
        try:
            future.set_result(await _discover(client))
        except BaseException:
            future.set_result(None)
            raise
    return await asyncio.shield(future)


async def _discover(client: ChatClient) -> int | None:
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel (Ctrl-C) that
        # lands in the same loop turn as the answer, and the run would go on.
        async with asyncio.timeout(_DISCOVERY_TIMEOUT):
            window = await _from_model_list(client)
        if window is None and client.provider != "groq":
            async with asyncio.timeout(_DISCOVERY_TIMEOUT):
                window = await _from_server(client)
    except Exception as error:  # the window is a nicety: never fail a run for want of it
        log.debug("llamaberry: could not learn the context window: %s", error)
        return None
    if window:
        log.debug("llamaberry: %s has a %d-token context window", client.model, window)
    return window


async def _from_model_list(client: ChatClient) -> int | None:
    if type(client)._make_sdk is _base_make_sdk():
        return None  # a client of one's own with no SDK has no model list to read
    page = await client.sdk.models.list()
    for model in page.data:
        if getattr(model, "id", None) == client.model:
            fields = dict(getattr(model, "model_extra", None) or {})
            fields.update(vars(model))
            return _first_number(fields, _LIST_FIELDS)
    return None


async def _from_server(client: ChatClient) -> int | None:
    """llama.cpp's `/props`, then Ollama's `/api/show`, at the server's root."""
    import httpx

    base = str(getattr(client.sdk, "base_url", "") or "").rstrip("/")
    if not base:
        return None
    root = re.sub(r"/v1$", "", base)
    async with httpx.AsyncClient(timeout=_DISCOVERY_TIMEOUT) as http:
        response = await http.get(f"{root}/props")
        if response.status_code == 200:
            data = response.json()
            settings = data.get("default_generation_settings") or {}
            window = _first_number(settings, ("n_ctx",)) or _first_number(data, ("n_ctx",))
            if window:
                return window
        response = await http.post(f"{root}/api/show", json={"model": client.model})
        if response.status_code == 200:
            data = response.json()
            # num_ctx is the window Ollama runs the model with; the model's own maximum is
            # only an upper bound, and Ollama cuts prompts to num_ctx without a word.
            found = _NUM_CTX.search(str(data.get("parameters") or ""))
            if found:
                return int(found.group(1))
    return None


def _first_number(fields: Mapping[str, Any], names: Sequence[str]) -> int | None:
    for name in names:
        value = fields.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def _base_make_sdk() -> Any:
    from llamaberry.providers.clients import ChatClient

    return ChatClient._make_sdk


# -- making a request fit -------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """How a call goes out: which form of its messages, and with what completion budget."""

    messages: list[Message]
    level: int  # 0: as written; higher: a more condensed form
    max_tokens: int | None  # None: the configured budget, unchanged
    prompt: int  # estimated prompt tokens
    window: int | None


def fit(
    forms: Iterable[list[Message]],
    window: int | None,
    budget: int,
    *,
    title: str,
) -> Fit:
    """Choose the first form of a call that fits `window` with a useful reply budget.

    `forms` go from whole to most condensed. A form fits when its prompt leaves room for the
    configured `budget`, or at least for a reply worth having (a quarter of the window, say),
    in which case the budget is lowered to the room left; failing that, half as much. When no
    form leaves that, the most condensed one goes out if it leaves room for a short reply. Otherwise nothing can
    be sent, and `ContextTooLongError` says why before anything is.
    """
    # The condensed forms may be built lazily: most calls fit whole and never ask for them.
    forms = iter(forms)
    whole = next(forms)
    prompt = estimate_prompt(whole)
    if not window:
        return Fit(list(whole), 0, None, prompt, None)
    want = min(budget, max(256, window // 4))
    floor = min(budget, 64)
    room = window - prompt
    if room >= want:
        return Fit(list(whole), 0, None if room >= budget else room, prompt, window)
    sized = [(0, whole, prompt)]
    sized += [(level, form, estimate_prompt(form)) for level, form in enumerate(forms, 1)]
    # Most of a reply's worth of room for the fullest form that leaves it, else half of it.
    for enough in (want, want // 2):
        for level, form, prompt in sized:
            room = window - prompt
            if room >= enough:
                return Fit(list(form), level, None if room >= budget else room, prompt, window)
    level, form, prompt = sized[-1]
    room = window - prompt
    if room >= floor:
        return Fit(list(form), level, room, prompt, window)
    condensed = " even with the earlier turns condensed" if len(sized) > 1 else ""
    raise ContextTooLongError(
        f"{title} cannot fit the model's {window:,}-token context window{condensed}: its "
        f"prompt alone is about {prompt:,} tokens. Shorten the question, use fewer --turns, "
        "or give the server a larger context (LLAMABERRY_CONTEXT if it cannot report one)."
    )


def cut_off_by(
    usage: Usage, budget: int | None, window: int | None
) -> Literal["max_tokens", "context", "server"]:
    """Which limit stopped a reply that ended with finish_reason "length"."""
    if budget and usage.completion_tokens >= budget:
        return "max_tokens"
    if window and usage.prompt_tokens + usage.completion_tokens >= window - _PER_REQUEST:
        return "context"
    if budget and usage.completion_tokens < budget:
        # The server stopped it short of our budget by a limit of its own: most likely a
        # context window it does not report.
        return "server"
    return "max_tokens"
