"""Context windows: making each request fit the model's, learned once per client.

What the endpoint says its window is comes from the client (`ChatClient.context_window`; for
the SDK providers see providers/discovery.py: the model list, llama.cpp's `/props`, Ollama's
`/api/show`). `LLAMABERRY_CONTEXT` overrides all of that. When nothing says, nothing is checked
before sending and the server's own "too long" is the answer.

Token counts are estimated from characters, generously (providers/tokens.py): a request we judge
to fit does fit.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from llamaberry.core.errors import ContextTooLongError
from llamaberry.core.results import Message, Usage
from llamaberry.providers.base import ChatClient
from llamaberry.providers.tokens import PER_REQUEST, estimate_prompt

_learned: weakref.WeakKeyDictionary[ChatClient, asyncio.Future[int | None]] = (
    weakref.WeakKeyDictionary()
)


async def context_window(client: ChatClient) -> int | None:
    """The model's context window as the endpoint tells it, asked once per client."""
    future = _learned.get(client)
    if future is None:
        future = asyncio.get_running_loop().create_future()
        _learned[client] = future
        try:
            future.set_result(await client.context_window())
        except BaseException:
            future.set_result(None)
            raise
    return await asyncio.shield(future)


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
    if window and usage.prompt_tokens + usage.completion_tokens >= window - PER_REQUEST:
        return "context"
    if budget and usage.completion_tokens < budget:
        # The server stopped it short of our budget by a limit of its own: most likely a
        # context window it does not report.
        return "server"
    return "max_tokens"
