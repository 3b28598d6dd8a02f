"""What an endpoint says about itself beyond chat: the model's context window (in its model list,
llama.cpp's `GET /props` or Ollama's `POST /api/show`) and how many requests the server works
on at once (`/props`). The one place that knows where a server of one's own keeps these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# Seconds to wait for a server to say what its window is; the answer is optional.
DISCOVERY_TIMEOUT = 10.0
# Model-list fields that give the window, in the order they are trusted.
_LIST_FIELDS = ("context_window", "max_model_len", "context_length", "max_context_length")
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


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
            return _first_number(fields, _LIST_FIELDS)
    return None


async def window_from_server(root: str, model: str, headers: Mapping[str, str]) -> int | None:
    """llama.cpp's `/props`, then Ollama's `/api/show`, at the server's `root`."""
    import httpx

    async with httpx.AsyncClient(timeout=DISCOVERY_TIMEOUT, headers=headers) as http:
        props = await _props(http, root)
        if props is not None:
            settings = props.get("default_generation_settings") or {}
            window = _first_number(settings, ("n_ctx",)) or _first_number(props, ("n_ctx",))
            if window:
                return window
        response = await http.post(f"{root}/api/show", json={"model": model})
        if response.status_code == 200:
            data = response.json()
            # num_ctx is the window Ollama runs the model with; the model's own maximum is
            # only an upper bound, and Ollama cuts prompts to num_ctx without a word.
            found = _NUM_CTX.search(str(data.get("parameters") or ""))
            if found:
                return int(found.group(1))
    return None


async def slots_from_server(root: str, headers: Mapping[str, str], timeout: float) -> int | None:
    """How many requests the server at `root` works on at once (llama.cpp's `/props`
    `total_slots`); None when it does not say, or cannot be asked."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:
            props = await _props(http, root)
        slots = props.get("total_slots") if props is not None else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None


async def _props(http: Any, root: str) -> Any:
    """llama.cpp's `/props` (its settings) as parsed JSON, or None when the server has none."""
    response = await http.get(f"{root}/props")
    return response.json() if response.status_code == 200 else None


def _first_number(fields: Mapping[str, Any], names: Sequence[str]) -> int | None:
    for name in names:
        value = fields.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None
