"""Groq's hosted models, through `groq.AsyncGroq`."""

from __future__ import annotations

from typing import Any

from llamaberry.core.providers import GROQ
from llamaberry.providers.sdk import SDKClient


class GroqClient(SDKClient):
    """Groq's hosted models through `groq.AsyncGroq`."""

    row = GROQ
    chat_path = "/openai/v1/chat/completions"  # Groq's base URL is the host alone

    def _make_sdk(self, connections: int) -> Any:
        import groq
        import httpx

        return self._build_sdk(groq.AsyncGroq, groq.DefaultAioHttpClient, httpx, connections)
