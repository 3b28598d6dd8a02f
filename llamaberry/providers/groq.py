"""Groq's hosted models, through `groq.AsyncGroq`."""

from __future__ import annotations

from typing import Any

from llamaberry.core.errors import MissingKeyError
from llamaberry.providers.keys import checked_key, find_base_url, find_key
from llamaberry.providers.sdk import SDKClient


class GroqClient(SDKClient):
    """Groq's hosted models through `groq.AsyncGroq`."""

    provider = "groq"
    key_variable = "GROQ_API_KEY"

    def __init__(self, *, api_key: str | None, base_url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        key, source = find_key(api_key, self.key_variable)
        if not key:
            raise MissingKeyError()
        self._api_key = checked_key(key, source)
        self._base_url = find_base_url(base_url, "GROQ_BASE_URL")

    def _make_sdk(self, connections: int) -> Any:
        import groq
        import httpx

        return self._build_sdk(groq.AsyncGroq, groq.DefaultAioHttpClient, httpx, connections)
