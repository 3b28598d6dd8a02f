"""What an endpoint says about itself beyond chat: the model's context window (in its model list,
llama.cpp's `GET /props` or Ollama's `POST /api/show`) and how many requests the server works
on at once (`/props`). The one place that knows where a server of one's own keeps these.

Both are niceties, and the server may be anything: its answers are read through the bounds of
the chat calls (transport.py's bounded client, at `MAX_DISCOVERY_BYTES`) within a timeout, and
anything over them or not a sane number is the server saying nothing (None), never an error.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import orjson

from llamaberry.providers.streams import ReplyTooLarge, UnreadableEncoding
from llamaberry.providers.transport import bounded_client

log = logging.getLogger("llamaberry")

# Seconds to wait for a server to say what its window is; the answer is optional.
DISCOVERY_TIMEOUT = 10.0
# The most of a server's answer about itself that is read. `/props` and `/api/show` are a few
# KB (a long chat template and a model's license make them tens of KB); past this an answer is
# not one, and the server is taken to say nothing. A 3xx is not followed: a server's own
# endpoints sit beside its API, and a redirect there says nothing either.
MAX_DISCOVERY_BYTES = 1 << 20
# The largest window and slot count believed: past these a number is not a server's setting
# (the largest windows today are about ten million tokens; llama.cpp's slots are its
# `--parallel`, a few dozen at most, and an eval runs that many items at once), and the server
# is taken to say nothing.
MAX_WINDOW = 1 << 27
MAX_SLOTS = 1 << 10
# Model-list fields that give the window, in the order they are trusted.
_LIST_FIELDS = ("context_window", "max_model_len", "context_length", "max_context_length")
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d{1,12})\s*$", re.MULTILINE)


def server_root(base_url: str | None) -> str | None:
    """Where a server's own endpoints are, for an API at `base_url`: llama.cpp and Ollama serve
    them beside `/v1`, not under it. None with no base URL (a provider's hosted API)."""
    base = str(base_url or "").rstrip("/")
    if not base:
        return None
    return base[: -len("/v1")] if base.endswith("/v1") else base


def window_in_model_list(page: Any, model: str) -> int | None:
    """The context window the SDK's model listing `page` gives for `model`, if any."""
    for entry in page.data:
        if getattr(entry, "id", None) == model:
            fields = dict(getattr(entry, "model_extra", None) or {})
            fields.update(vars(entry))
            return next(
                (n for name in _LIST_FIELDS if (n := _number(fields, name, MAX_WINDOW))), None
            )
    return None


async def window_from_server(
    root: str, model: str, headers: Mapping[str, str], timeout: float = DISCOVERY_TIMEOUT
) -> int | None:
    """llama.cpp's `/props`, then Ollama's `/api/show`, at the server's `root`, each asked
    within `timeout` seconds; None when neither says (never an error)."""
    async with _client(headers) as http:
        props = await _ask(http, "GET", f"{root}/props", timeout)
        if props is not None:
            settings = props.get("default_generation_settings")
            window = _number(settings, "n_ctx", MAX_WINDOW) or _number(props, "n_ctx", MAX_WINDOW)
            if window:
                return window
        shown = await _ask(http, "POST", f"{root}/api/show", timeout, json={"model": model})
    if shown is not None:
        # num_ctx is the window Ollama runs the model with; the model's own maximum is
        # only an upper bound, and Ollama cuts prompts to num_ctx without a word.
        found = _NUM_CTX.search(str(shown.get("parameters") or ""))
        if found and 0 < int(found.group(1)) <= MAX_WINDOW:
            return int(found.group(1))
    return None


async def slots_from_server(root: str, headers: Mapping[str, str], timeout: float) -> int | None:
    """How many requests the server at `root` works on at once (llama.cpp's `/props`
    `total_slots`); None when it does not say, or cannot be asked."""
    try:
        async with _client(headers) as http:
            props = await _ask(http, "GET", f"{root}/props", timeout)
    except Exception as error:  # the client itself (a proxy in the environment...): a nicety
        log.debug("llamaberry: could not ask the server for its slots: %s", error)
        return None
    return _number(props, "total_slots", MAX_SLOTS, whole=True)


def _client(headers: Mapping[str, str]) -> Any:
    """An httpx client bounded as the chat calls' (transport.py), at `MAX_DISCOVERY_BYTES`,
    that asks for an uncompressed answer and follows no redirect."""
    import httpx

    bounded = bounded_client(httpx.AsyncClient, httpx, MAX_DISCOVERY_BYTES)
    return bounded(headers={**headers, "accept-encoding": "identity"}, follow_redirects=False)


async def _ask(
    http: Any, method: str, url: str, timeout: float, **kwargs: Any
) -> Mapping[str, Any] | None:
    """The JSON object the server answers `url` with, read within `timeout` seconds and the
    bounds; None for anything else: no answer in time, another status, a body over the
    bounds, one that is not a JSON object."""
    import httpx

    try:
        async with asyncio.timeout(timeout):
            response = await http.request(method, url, timeout=timeout, **kwargs)
        if response.status_code != 200:
            return None
        data = orjson.loads(response.content)
    except (TimeoutError, httpx.HTTPError, ReplyTooLarge, UnreadableEncoding, ValueError) as error:
        # The path alone: the URL may hold credentials.
        log.debug("llamaberry: %s said nothing usable: %s", httpx.URL(url).path, error)
        return None
    return data if isinstance(data, dict) else None


def _number(fields: Any, name: str, most: int, *, whole: bool = False) -> int | None:
    """`fields[name]` as a count when it is one: a number (an integer with `whole`) from 1 to
    `most`; None for anything else (missing, a string, NaN, infinite, absurd)."""
    if not isinstance(fields, Mapping):
        return None
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        return None
    return int(value) if 1 <= value <= most else None
