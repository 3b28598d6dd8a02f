"""Any OpenAI-compatible endpoint (OpenAI itself, vLLM, Ollama, llama.cpp's server, LM Studio),
through `openai.AsyncOpenAI`."""

from __future__ import annotations

from typing import Any

from llamaberry.core.providers import OPENAI
from llamaberry.providers.sdk import SDKClient


class OpenAICompatibleClient(SDKClient):
    """Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp's server, LM Studio, OpenAI).

    Its row needs a key only for OpenAI's own API (no base URL given): local servers usually
    take none, and the SDK is sent a placeholder.
    """

    row = OPENAI
    _sdk_name = "openai"
    _http_name = "httpx2"

    def _make_sdk(self, connections: int) -> Any:
        import httpx2
        import openai

        return self._build_sdk(openai.AsyncOpenAI, openai.DefaultAioHttpClient, httpx2, connections)

    def _extra_params(self, stream: bool) -> dict[str, Any]:
        return {"stream_options": {"include_usage": True}} if stream else {}
